"""Checks of model files someone else wrote, made before anything is allocated.

`alignment.models.convert` (a Hugging Face config.json and its safetensors),
`alignment.models.export` and the loops' loaders (a params export's
model_config.json, through `zoo.load_model_config`) call these before they
build a model or read a tensor. Each refusal is a `ModelFileError`, a
ValueError whose message is one line, `<file>: <field>: <what is wrong>`; the
command-line tools print it as `error: ...` and exit with status 2.

What is refused:
- a size that is not an integer (a float, a string, a bool, null), is below 1
  (0 or negative; 2 for T5's relative buckets) or above its ceiling in
  `CEILINGS`; a norm epsilon, RoPE
  theta or factor that is not a finite number in its range;
- attention that cannot be laid out: a width that the head count does not
  divide (a Llama config.json without head_dim), key/value heads that do not
  divide the query heads;
- a safetensors file whose header is not what the format says (its length
  past the file, not a JSON object, an entry without a known dtype, a shape
  of non-negative integers and two data offsets), whose offsets lie outside
  the file, overlap another tensor's or do not hold the declared shape; a
  tensor the config does not imply, a missing one, one of another shape or of
  a dtype that is not a float (F32, BF16, F16, F64): all from the header,
  before any tensor's bytes are read, so what is then read is bounded by the
  file's own size (twice it at most, a BF16 file held as float32);
- JSON files (config.json, model_config.json, an index of shards) larger than
  `MAX_JSON_BYTES`, a safetensors header larger than `MAX_HEADER_BYTES` (both
  checked before parsing), not JSON, or not a JSON object.

Why these ceilings: each is at least four times the largest released model we
know of (a 262,144-token vocabulary; width 16,384 and 126 layers in Llama 3.1
405B; d_ff 65,536 and 128 heads in T5 11B; head width 256; a 10M-token context
in Llama 4 Scout), so no real model is refused, while a config.json that
claims a million-wide model over a tiny model's tensors stops here instead of
in a traceback from a jitted call. A larger model raises the ceiling in
`CEILINGS`; the refusal says where.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Mapping

# The largest size accepted for each kind of dimension (module docstring: why).
CEILINGS = {
    "vocab_size": 2 ** 22,        # 4,194,304 token ids
    "d_model": 2 ** 16,           # 65,536
    "d_ff": 2 ** 18,              # 262,144
    "layers": 1024,
    "heads": 2 ** 12,             # 4,096 (query or key/value heads)
    "head_dim": 2 ** 12,
    "relative_buckets": 2 ** 12,  # T5's relative-position buckets
    "positions": 2 ** 26,         # a maximum distance or context length
}
# JSON parsed into Python objects can take 20 times its size (a list of distinct
# integers), so the files read here are bounded before they are parsed: real
# config.json and model_config.json files are a few KB, an index of shards or a
# safetensors header of a thousand-layer model (some 15,000 tensors) under 2 MB.
MAX_JSON_BYTES = 16 * 2 ** 20      # config.json, model_config.json, index.json
MAX_HEADER_BYTES = 16 * 2 ** 20    # a safetensors header (the format allows 100 MB)

# safetensors dtypes and their sizes in bytes; only the floats are weights.
SAFETENSORS_DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1,
                      "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2,
                      "U8": 1, "BOOL": 1}
WEIGHT_DTYPES = ("F32", "BF16", "F16", "F64")
REQUIRED = object()  # `get`'s default: the key must be there


class ModelFileError(ValueError):
  """A model file that cannot be used; the message is one line naming the file and field."""


def refuse(where: str, field: str, problem: str) -> ModelFileError:
  return ModelFileError(f"{where}: {field}: {problem}")


def show(value: Any, limit: int = 60) -> str:
  """A value as JSON would write it, cut to `limit` characters (one line, short)."""
  try:
    text = json.dumps(value)
  except (TypeError, ValueError):
    text = repr(value)
  text = " ".join(text.split())
  return text if len(text) <= limit else text[:limit] + "..."


def one_line(message: str, limit: int = 200) -> str:
  """An error's text on one line, cut to `limit` characters."""
  text = " ".join(str(message).split())
  return text if len(text) <= limit else text[:limit] + "..."


def _ceiling_note(kind: str) -> str:
  return (f"above the ceiling {CEILINGS[kind]} (alignment.models.validate.CEILINGS"
          f"[{kind!r}]: raise it there for a larger real model)")


def integer(value: Any, where: str, field: str, kind: str, low: int = 1) -> int:
  """`value` if it is an integer in [low, CEILINGS[kind]], else a ModelFileError."""
  if isinstance(value, bool) or not isinstance(value, int):
    raise refuse(where, field, f"{show(value)} is not an integer")
  if value < low:
    raise refuse(where, field, f"{value} is below {low}")
  if value > CEILINGS[kind]:
    raise refuse(where, field, f"{value} is {_ceiling_note(kind)}")
  return value


def number(value: Any, where: str, field: str, low: float = 0.0, high: float = math.inf,
           low_open: bool = True) -> float:
  """`value` as a float if it is a finite number in (low, high) ([low, high) with
  `low_open=False`), else a ModelFileError."""
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise refuse(where, field, f"{show(value)} is not a number")
  if not math.isfinite(value) or not (low < value if low_open else low <= value) or (
      value >= high):
    bounds = f"{'(' if low_open else '['}{low}, {high})"
    raise refuse(where, field, f"{show(value)} is not a finite number in {bounds}")
  return float(value)


def flag(value: Any, where: str, field: str) -> bool:
  if not isinstance(value, bool):
    raise refuse(where, field, f"{show(value)} is not true or false")
  return value


def text(value: Any, where: str, field: str) -> str:
  if not isinstance(value, str):
    raise refuse(where, field, f"{show(value)} is not a string")
  return value


def get(d: Mapping[str, Any], key: str, where: str, default: Any = REQUIRED) -> Any:
  """d[key]; `default` where the key is absent or null (as transformers reads
  config.json); a ModelFileError where it is absent and there is no default."""
  value = d.get(key)
  if value is None:
    if default is REQUIRED:
      raise refuse(where, key, "missing")
    return default
  return value


def read_json(path: str, limit: int | None = None,
              limit_name: str = "alignment.models.validate.MAX_JSON_BYTES") -> dict:
  """A JSON object from `path`: refused in one line if unreadable, over `limit`
  bytes (default `MAX_JSON_BYTES`; checked before reading), not JSON or not an
  object. `limit_name` says where the limit is set."""
  limit = MAX_JSON_BYTES if limit is None else limit
  try:
    size = os.path.getsize(path)
    if size > limit:
      raise ModelFileError(f"{path}: {size} bytes, more than the {limit} this file may have "
                           f"({limit_name})")
    with open(path, "rb") as f:
      data = f.read()
  except OSError as e:
    raise ModelFileError(f"{path}: cannot read ({e.strerror or e})") from None
  try:
    value = json.loads(data)
  except RecursionError:
    raise ModelFileError(f"{path}: not JSON (nested too deeply)") from None
  except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, a 5000-digit integer
    raise ModelFileError(f"{path}: not JSON ({one_line(e, 120)})") from None
  if not isinstance(value, dict):
    raise ModelFileError(f"{path}: not a JSON object (a {type(value).__name__})")
  return value


# ----------------------------------------------------------------------------
# Zoo configs (model_config.json of a params export)
# ----------------------------------------------------------------------------

# A zoo config's integer fields and the ceiling each is held to.
ZOO_SIZES = {"vocab_size": "vocab_size", "d_model": "d_model", "d_ff": "d_ff",
             "num_heads": "heads", "num_kv_heads": "heads", "head_dim": "head_dim",
             "num_layers": "layers", "num_encoder_layers": "layers",
             "num_decoder_layers": "layers", "relative_buckets": "relative_buckets",
             "relative_max_distance": "positions", "rope_original_max_positions": "positions"}
ZOO_FLAGS = ("tie_embeddings", "qkv_bias", "out_bias", "remat")
ZOO_DTYPES = ("float32", "bfloat16", "float16")


def check_model_config(cfg, where: str):
  """Refuses a zoo config (T5Config, DecoderConfig) that no model can be built from:
  sizes, flags and dtypes of the wrong type or out of range, key/value heads that
  do not divide the query heads. Returns cfg."""
  values = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
  for field, kind in ZOO_SIZES.items():
    if field in values:
      integer(values[field], where, field, kind, low=2 if field == "relative_buckets" else 1)
  for field in ZOO_FLAGS:
    if field in values:
      flag(values[field], where, field)
  for field in ("dtype", "param_dtype"):
    if values.get(field) not in ZOO_DTYPES:
      raise refuse(where, field, f"{show(values.get(field))} is not one of "
                   f"{', '.join(ZOO_DTYPES)}")
  number(values["norm_eps"], where, "norm_eps", 0.0, 1.0, low_open=False)
  if "rope_theta" in values:
    number(values["rope_theta"], where, "rope_theta")
    for field in ("rope_factor", "rope_low_freq_factor", "rope_high_freq_factor"):
      number(values[field], where, field)
    if values["rope_type"] == "llama3" and not (
        values["rope_high_freq_factor"] > values["rope_low_freq_factor"]):
      raise refuse(where, "rope_high_freq_factor", f"{values['rope_high_freq_factor']} is "
                   f"not above rope_low_freq_factor {values['rope_low_freq_factor']}")
  if "num_kv_heads" in values and values["num_heads"] % values["num_kv_heads"]:
    raise refuse(where, "num_kv_heads", f"{values['num_kv_heads']} does not divide "
                 f"num_heads {values['num_heads']}")
  return cfg


# ----------------------------------------------------------------------------
# safetensors
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Tensor:
  """One tensor of a safetensors file, as its header declares it (checked)."""
  path: str
  name: str
  dtype: str
  shape: tuple[int, ...]
  start: int  # absolute byte offsets in the file
  end: int


def _entry(path: str, name: str, entry: Any, data_start: int, data_len: int) -> Tensor:
  if not isinstance(entry, dict):
    raise refuse(path, name, f"header entry {show(entry)} is not an object")
  dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
  if not isinstance(dtype, str) or dtype not in SAFETENSORS_DTYPES:
    raise refuse(path, name, f"dtype {show(dtype)} is not a safetensors dtype")
  if (not isinstance(shape, list) or len(shape) > 8 or not all(
      isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)):
    raise refuse(path, name, f"shape {show(shape)} is not a list of at most 8 "
                 "non-negative integers")
  if (not isinstance(offsets, list) or len(offsets) != 2 or not all(
      isinstance(n, int) and not isinstance(n, bool) for n in offsets)):
    raise refuse(path, name, f"data_offsets {show(offsets)} are not two integers")
  begin, end = offsets
  if not 0 <= begin <= end <= data_len:
    raise refuse(path, name, f"data_offsets [{begin}, {end}] lie outside the file's "
                 f"{data_len} bytes of data")
  need = math.prod(shape) * SAFETENSORS_DTYPES[dtype]
  if end - begin != need:
    raise refuse(path, name, f"shape {list(shape)} of {dtype} needs {need} bytes, its "
                 f"data_offsets [{begin}, {end}] hold {end - begin}")
  return Tensor(path, name, dtype, tuple(shape), data_start + begin, data_start + end)


def safetensors_header(path: str) -> dict[str, Tensor]:
  """The tensors a safetensors file declares, every entry checked against the
  format and the file's size (module docstring); nothing but the header is read."""
  try:
    with open(path, "rb") as f:
      size = os.fstat(f.fileno()).st_size
      head = f.read(8)
      if len(head) < 8:
        raise refuse(path, "header", f"the file has {size} bytes, fewer than the 8 of the "
                     "header's length")
      n = int.from_bytes(head, "little")
      if 8 + n > size:
        raise refuse(path, "header", f"its length says {n} bytes; the file has {size - 8} "
                     "after it")
      if n > MAX_HEADER_BYTES:
        raise refuse(path, "header", f"{n} bytes, more than the {MAX_HEADER_BYTES} a header "
                     "may have here (alignment.models.validate.MAX_HEADER_BYTES)")
      raw = f.read(n)
  except OSError as e:
    raise ModelFileError(f"{path}: cannot read ({e.strerror or e})") from None
  try:
    header = json.loads(raw)
  except RecursionError:
    raise refuse(path, "header", "not JSON (nested too deeply)") from None
  except ValueError as e:
    raise refuse(path, "header", f"not JSON ({one_line(e, 120)})") from None
  if not isinstance(header, dict):
    raise refuse(path, "header", f"not a JSON object (a {type(header).__name__})")
  metadata = header.pop("__metadata__", None)
  if metadata is not None and not isinstance(metadata, dict):
    raise refuse(path, "__metadata__", f"{show(metadata)} is not an object")
  data_start = 8 + n
  tensors = {name: _entry(path, name, entry, data_start, size - data_start)
             for name, entry in header.items()}
  last = None
  for t in sorted((t for t in tensors.values() if t.end > t.start),
                  key=lambda t: (t.start, t.end)):
    if last is not None and t.start < last.end:
      raise refuse(path, t.name, f"data_offsets [{t.start - data_start}, "
                   f"{t.end - data_start}] overlap {last.name}'s [{last.start - data_start}, "
                   f"{last.end - data_start}]")
    last = t
  return tensors


def read_tensor(t: Tensor):
  """A float32 numpy array of a checked header entry (a float dtype)."""
  import ml_dtypes  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  dtype = {"F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
           "BF16": np.dtype(ml_dtypes.bfloat16)}.get(t.dtype)
  if dtype is None:
    raise refuse(t.path, t.name, f"dtype {t.dtype}; weights must be one of "
                 f"{', '.join(WEIGHT_DTYPES)}")
  count = math.prod(t.shape)
  try:
    with open(t.path, "rb") as f:
      f.seek(t.start)
      data = f.read(t.end - t.start)
  except OSError as e:
    raise ModelFileError(f"{t.path}: cannot read ({e.strerror or e})") from None
  if len(data) != t.end - t.start:  # the file shrank since its header was read
    raise refuse(t.path, t.name, f"the file ends before byte {t.end}")
  return np.frombuffer(data, dtype, count).reshape(t.shape).astype(np.float32)


def check_tensors(found: Mapping[str, Tensor], wanted: Mapping[str, tuple[int, ...]],
                  optional: Mapping[str, tuple[int, ...]], fallbacks: Mapping[str, str],
                  config: str, where: str) -> None:
  """Refuses tensors that disagree with what a config implies, from their headers:
  `wanted` names every tensor the model needs with its shape (`fallbacks[name]`
  may stand in for one), `optional` those that may also be there (tied copies);
  any other tensor, a missing one, another shape or a dtype that is not a
  float is one line naming the file and tensor."""
  for name, shape in wanted.items():
    t = found.get(name) or found.get(fallbacks.get(name, ""))
    if t is None:
      raise refuse(where, name, f"missing, but {config} implies it")
  for name, t in found.items():
    shape = wanted.get(name, optional.get(name))
    if shape is None and name in fallbacks.values():
      shape = next(wanted[k] for k, v in fallbacks.items() if v == name)
    if shape is None:
      continue  # reported below with the others
    if t.shape != tuple(shape):
      raise refuse(t.path, name, f"shape {list(t.shape)}, but {config} implies "
                   f"{list(shape)}")
    if t.dtype not in WEIGHT_DTYPES:
      raise refuse(t.path, name, f"dtype {t.dtype}; weights must be one of "
                   f"{', '.join(WEIGHT_DTYPES)}")
  extra = sorted(n for n in found if n not in wanted and n not in optional
                 and n not in fallbacks.values())
  if extra:
    raise refuse(found[extra[0]].path, extra[0], f"a tensor {config} does not imply (of "
                 f"{len(extra)} such: {show(extra, 200)})")
