"""Byte-level damage shared by the fuzzers (tests/data/test_fuzz_inputs.py,
tests/models/test_hostile_dirs.py): imported as `fuzz_bytes` (pytest.ini puts
tests/ on sys.path)."""


def flip_or_insert(rng, data: bytes, kind: str) -> tuple[str, bytes]:
  """1 to 4 random bytes of non-empty `data` overwritten (kind "flip") or 1 to 3
  random bytes inserted at 1 to 4 places ("insert"), drawn from `rng` (a
  random.Random); returns (what was done, the damaged bytes)."""
  out = bytearray(data)
  for _ in range(rng.randint(1, 4)):
    at = rng.randrange(len(out))
    if kind == "flip":
      out[at] = rng.randrange(256)
    else:
      out[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 3)))
  return f"bytes {'flipped' if kind == 'flip' else 'inserted'}", bytes(out)
