"""Fuzzed preference files: each imports whole or ends with one error line.

Every case goes through the importer's command, `import_pairs.main([...])`, end
to end (a tiny file imports in about 2 ms once TensorFlow is loaded). A case
mutates a valid file of its format (the fixtures' records, a few lines) with
one to three of: truncation at a random byte, byte flips and insertions,
invalid UTF-8, a BOM, CRLF or CR line ends, an empty or blank file, blank and
duplicated lines, a field's value swapped for another JSON type, a missing
field, a duplicated key, a huge field (up to 10 MB), deep nesting (up to 100k
nested lists or objects), odd numbers (NaN, 1e400, a 5000-digit integer, 1.0)
and odd escapes (lone surrogates, NUL). Half the cases write over an earlier
import with --overwrite. A duplicated key is JSON's: the last one counts.

The chat format gets the same mutations of its seed (tests/fixtures/chat.jsonl,
every layout) and is imported with a tiny Llama-3-style model
(tests/hf_tokenizer.py); its mutations also reach the messages' roles and
contents. Parquet input (chat and jsonl) gets the record mutations that still
make a Parquet table, or truncation and byte flips and insertions of the file.

The property: exit status 0, and the output directory is complete and its
records read back as the file's texts and tokens; or exit status 2, one line
on stderr naming the file (and the line, or the Parquet row, for a record's
error), the output directory absent or the earlier import byte for byte
intact, nothing left beside it. Cases are seeded by (format, index): a
failure names its mutations, and `_case(fmt, index)` (`_parquet_case` for
Parquet) rebuilds it. The inputs that broke the
importer once are kept as named cases first.
"""
import contextlib
import io
import json
import os
import random
import re
import shutil

import pytest

from alignment.data import import_pairs as ip
from hf_tokenizer import build_chat_model  # noqa: E402
import fuzz_bytes  # tests/fuzz_bytes.py

_TLDR = b'{"info": {"post": "p"}, "summaries": [{"text": "a"}, {"text": "b"}], "choice": '
_PAIR = b'"prompt": "p", "chosen": "c", "rejected": "r"'

# Inputs that once ended in a traceback or an unclear line, and the line they end with now.
BROKE = [
    ("10k nested lists", "jsonl", b'{' + _PAIR + b', "x": ' + b"[" * 10_000 + b"]" * 10_000
     + b"}", "not valid JSON (nested too deeply)"),
    ("5000-digit id", "jsonl", b'{"id": ' + b"1" * 5000 + b", " + _PAIR + b"}",
     "not valid JSON (Exceeds the limit (4300 digits) for integer string conversion"),
    ("choice 1.0", "tldr", _TLDR + b"1.0}", 'field "choice": expected 0 or 1, got 1.0'),
    ("lone surrogate", "hh", b'{"chosen": "\\n\\nAssistant: a\\udc00", "rejected": '
     b'"\\n\\nAssistant: b"}', 'field "chosen": an unpaired surrogate (\\udc00) is not text'),
    ("lone surrogate id", "jsonl", b'{"id": "\\ud800", ' + _PAIR + b"}",
     'field "id": an unpaired surrogate (\\ud800) is not text'),
    ("20k-character choice", "tldr", _TLDR + b'"' + b"y" * 20_000 + b'"}',
     'field "choice": expected 0 or 1, got \'yyyy'),
]


@pytest.mark.parametrize("why,fmt,line,message", BROKE, ids=[b[0] for b in BROKE])
def test_inputs_that_broke_the_importer_end_with_one_line(tmp_path, capsys, why, fmt, line,
                                                          message):
  del why
  src, out = tmp_path / "in.jsonl", tmp_path / "out"
  src.write_bytes(line + b"\n")
  assert ip.main([f"--input={src}", f"--format={fmt}", f"--output={out}"]) == 2
  err = capsys.readouterr().err
  assert err.startswith(f"import_pairs: error: {src}:1: {message}") and err.count("\n") == 1, err
  assert len(err) < len(str(src)) + 200, err
  assert not out.exists()


def test_a_duplicated_long_id_is_named_in_a_short_line(tmp_path, capsys):
  src, out = tmp_path / "in.jsonl", tmp_path / "out"
  record = b'{"id": "' + b"y" * 20_000 + b'", ' + _PAIR + b"}\n"
  src.write_bytes(record * 2)
  assert ip.main([f"--input={src}", "--format=jsonl", f"--output={out}"]) == 2
  err = capsys.readouterr().err
  assert err.startswith(f"import_pairs: error: {src}:2: field \"id\": 'yyyy") and (
      err.endswith(" characters) duplicates line 1\n")), err
  assert len(err) < len(str(src)) + 200, err


# ---------------------------------------------------------------------------
# Fuzzing
# ---------------------------------------------------------------------------

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
SEEDS = {"jsonl": "pairs.jsonl", "tldr": "tldr.jsonl", "hh": "hh.jsonl", "chat": "chat.jsonl"}
PARQUET_CASES = 150  # per format, of PARQUET_FORMATS
PARQUET_FORMATS = ("chat", "jsonl")
CASES = 500  # per format
MAX_PROMPT, MAX_RESPONSE = 512, 128
# The fields the importer reads (and list items): most mutations go there.
READ = {"id", "prompt", "chosen", "rejected", "info", "post", "article", "title", "subreddit",
        "summaries", "text", "choice", "role", "content"}
_HOLE = "\x00HOLE\x00"  # a string value replaced by raw bytes after json.dumps


def _random_value(rng: random.Random, avoid: type):
  makers = [lambda: rng.randint(-3, 3), lambda: rng.choice([0.5, 1.0, 0.0, -2.5]),
            lambda: rng.choice(["", " ", "x", "0", "1", "\n\nAssistant:"]),
            lambda: None, lambda: rng.choice([True, False]),
            lambda: [rng.choice(["a", 1, None])] * rng.randint(0, 3),
            lambda: {"text": "t"} if rng.random() < 0.5 else {}]
  while True:
    value = rng.choice(makers)()
    if type(value) is not avoid:
      return value


def _slots(obj, out=None):
  """Every (container, key) of a parsed record, nested ones too."""
  out = [] if out is None else out
  items = obj.items() if isinstance(obj, dict) else enumerate(obj)
  for key, value in items:
    out.append((obj, key))
    if isinstance(value, (dict, list)):
      _slots(value, out)
  return out


def _raw_for(rng: random.Random) -> tuple[str, bytes]:
  """Raw JSON (or not) text to put where a value was: what json.dumps cannot write."""
  n = rng.choice([10_000, 100_000])
  return rng.choice([
      (f"{n} nested lists", b"[" * n + b"]" * n),
      (f"{n} nested objects", b'{"a": ' * n + b"1" + b"}" * n),
      ("invalid utf-8", b'"x' + rng.choice([b"\xff", b"\xc3", b"\xc0\x80", b"\xed\xa0\x80",
                                            b"\xf4\x90\x80\x80"]) + b'y"'),
      ("lone surrogate", rng.choice([b'"a\\ud800"', b'"\\udc00b"', b'"\\ud800\\ud800"'])),
      ("NUL escape", b'"a\\u0000b"'),
      ("surrogate pair", b'"\\ud83d\\ude00 ok"'),
      ("odd number", rng.choice([b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-0",
                                 b"1" * 5000, b"1.0", b"0.0", b"1e0", b"01"])),
  ])


def _mutate_record(rng: random.Random, line: bytes) -> tuple[str, bytes]:
  try:
    obj = json.loads(line)
  except (ValueError, RecursionError):  # an earlier mutation's work
    return "nothing (not JSON)", line
  if not isinstance(obj, (dict, list)) or not obj:
    return "nothing (not a record)", line
  slots = _slots(obj)
  read = [(c, k) for c, k in slots if k in READ or isinstance(k, int)]
  container, key = rng.choice(read if read and rng.random() < 0.8 else slots)
  kind = rng.choice(["type swap", "missing", "raw", "raw", "huge", "duplicate key"])
  if kind == "type swap":
    container[key] = _random_value(rng, type(container[key]))
    return f"type swap of {key!r}", json.dumps(obj).encode()
  if kind == "missing":
    del container[key]
    return f"missing {key!r}", json.dumps(obj).encode()
  if kind == "huge":
    size = 10_000_000 if rng.random() < 0.06 else rng.choice([1_000, 20_000, 100_000])
    container[key] = "y" * size
    return f"{size}-character {key!r}", json.dumps(obj).encode()
  if kind == "duplicate key":
    if not isinstance(container, dict):
      return "nothing", line
    text = json.dumps(obj)
    extra = json.dumps({key: _random_value(rng, type(None))})[1:-1]
    at = text.index(json.dumps(key) + ":")  # a key may occur twice: the first is enough
    text = text[:at] + extra + ", " + text[at:] if rng.random() < 0.5 else (
        text[:at] + text[at:].replace(json.dumps(key) + ":", extra + ", " + json.dumps(key) +
                                      ":", 1))
    return f"duplicate key {key!r}", text.encode()
  what, raw = _raw_for(rng)
  container[key] = _HOLE
  text = json.dumps(obj).encode()
  return f"{what} in {key!r}", text.replace(json.dumps(_HOLE).encode(), raw, 1)


def _mutate(rng: random.Random, data: bytes) -> tuple[str, bytes]:
  lines = data.split(b"\n")
  records = [i for i, l in enumerate(lines) if l.strip()]
  kind = rng.choice(["record"] * 6 + ["truncate", "flip", "insert", "bom", "crlf", "cr",
                                      "blank", "duplicate line", "not an object", "empty"])
  if kind == "record" and records:
    i = rng.choice(records)
    what, lines[i] = _mutate_record(rng, lines[i])
    return f"line {i + 1}: {what}", b"\n".join(lines)
  if kind == "truncate":
    at = rng.randrange(len(data) + 1)
    return f"truncated at byte {at}", data[:at]
  if kind in ("flip", "insert") and data:
    return fuzz_bytes.flip_or_insert(rng, data, kind)
  if kind == "bom":
    return "BOM", b"\xef\xbb\xbf" + data
  if kind == "crlf":
    return "CRLF", data.replace(b"\n", b"\r\n")
  if kind == "cr":
    return "CR", data.replace(b"\n", b"\r")
  if kind == "blank":
    lines.insert(rng.randrange(len(lines) + 1), rng.choice([b"", b" ", b"\t", b"\r"]))
    return "blank line", b"\n".join(lines)
  if kind == "duplicate line" and records:
    lines.append(lines[rng.choice(records)])
    return "duplicated line", b"\n".join(lines)
  if kind == "not an object" and records:
    i = rng.choice(records)
    lines[i] = rng.choice([b"[]", b'"text"', b"3", b"null", b"true", b"[" + lines[i] + b"]"])
    return f"line {i + 1} not an object", b"\n".join(lines)
  if kind == "empty":
    return "empty", rng.choice([b"", b"\n", b"\n\n", b" \r\n"])
  at = rng.randrange(len(data) + 1)  # what the kinds above could not do here
  return f"truncated at byte {at}", data[:at]


def _case(fmt: str, index: int) -> tuple[str, bytes]:
  """The index-th mutated file of fmt: (its mutations, its bytes)."""
  rng = random.Random(f"{fmt}-{index}")
  with open(os.path.join(FIXTURES, SEEDS[fmt]), "rb") as f:
    data = f.read()
  done = []
  for _ in range(rng.choice([1, 1, 2, 3])):
    what, data = _mutate(rng, data)
    done.append(what)
  return "; ".join(done), data


def _read_back(out: str) -> list[dict]:
  from alignment.data.tf_setup import tf  # pylint: disable=g-import-not-at-top
  rows = []
  # TensorFlow's plain record reader: a tf.data pipeline per case costs 50 ms to build.
  for raw in tf.compat.v1.io.tf_record_iterator(os.path.join(out, ip.RECORDS)):
    f = tf.train.Example.FromString(raw).features.feature
    rows.append({k: (f[k].bytes_list.value[0].decode() if k.endswith("_text") else
                     list(f[k].int64_list.value))
                 for k in ("prompt", "chosen", "rejected", "prompt_text", "chosen_text",
                           "rejected_text", "line")})
  return rows


def _snapshot(directory: str) -> dict[str, bytes]:
  out = {}
  for name in sorted(os.listdir(directory)):
    with open(os.path.join(directory, name), "rb") as f:
      out[name] = f.read()
  return out


def _check_case(tmp, fmt: str, index: int, earlier: str, model: str,
                parquet: bool = False) -> tuple[str | None, int]:
  """Runs one case; returns what went wrong (or None) and the exit status."""
  data = (_parquet_case if parquet else _case)(fmt, index)[1]
  work = os.path.join(tmp, f"{fmt}{index}")
  os.makedirs(work)
  src = os.path.join(work, "in.parquet" if parquet else "in.jsonl")
  with open(src, "wb") as f:
    f.write(data)
  out = os.path.join(work, "out")
  overwrite = index % 2 == 1
  before = None
  if overwrite:
    shutil.copytree(earlier, out)
    before = _snapshot(out)
  err, stdout = io.StringIO(), io.StringIO()
  argv = [f"--input={src}", f"--format={fmt}", f"--output={out}"] + (
      ["--overwrite"] if overwrite else []) + ([f"--vocab={model}"] if fmt == "chat" else [])
  try:
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(stdout):
      rc = ip.main(argv)
  except BaseException as e:  # pylint: disable=broad-except  (the property under test)
    return f"raised {type(e).__name__}: {str(e)[:200]}", -1
  problem = _check_outcome(src, fmt, out, rc, err.getvalue(), before, model)
  shutil.rmtree(work)
  return problem, rc


def _check_outcome(src, fmt, out, rc, message, before, model) -> str | None:
  work = os.path.dirname(out)
  left = sorted(set(os.listdir(work)) - {os.path.basename(src), "out"})
  if left:
    return f"left beside the output: {left}"
  if rc == 0:
    if message:
      return f"exit 0 with stderr {message[:200]!r}"
    return _check_imported(src, fmt, out, model)
  if rc != 2 or message.count("\n") != 1:
    return f"exit {rc}, stderr {message[:300]!r}"
  where = (r"(: row \d+: .+|: not a readable Parquet file \(.+\)|: no records)"
           if src.endswith(".parquet") else r"(:\d+: .+|: no records)")
  pattern = rf"import_pairs: error: {re.escape(src)}{where}\n"
  if not re.fullmatch(pattern, message) or len(message) > len(src) + 400:
    return f"not one clear line naming the file and line: {message[:300]!r}"
  if before is not None and _snapshot(out) != before:
    return "the earlier import was changed"
  if before is None and os.path.exists(out):
    return "an output directory was left"
  return None


def _expected_ids(fmt: str, r, model: str) -> tuple[list[int], list[int], list[int]]:
  """What the record's ids must be: the byte vocabulary's (+ its EOS, 1), or for chat
  the model's template's (tests/data/test_data_chat.py holds those to transformers')."""
  if fmt != "chat":
    tokens = ([b + 3 for b in t.encode()] for t in (r.prompt, r.chosen, r.rejected))
    return next(tokens), next(tokens) + [1], next(tokens) + [1]
  from alignment.data import chat  # pylint: disable=g-import-not-at-top
  from alignment.data import vocab as V  # pylint: disable=g-import-not-at-top
  pair = chat.load_template(V.get_vocabulary(model)).pair_ids(*r.messages, MAX_PROMPT,
                                                               "error")
  return pair.prompt, pair.chosen, pair.rejected


def _check_imported(src: str, fmt: str, out: str, model: str) -> str | None:
  if not {ip.META, ip.RECORDS} <= set(os.listdir(out)):
    return f"output holds {sorted(os.listdir(out))}"
  meta = ip.read_metadata(out)
  expected = list(ip.read_records(src, fmt))
  rows = _read_back(out)
  if meta["num_records"] != len(rows) or len(rows) != len(expected):
    return f"{len(rows)} records read back, {meta['num_records']} in metadata, {len(expected)} in"
  for row, r in zip(rows, expected):
    texts = (r.prompt, r.chosen, r.rejected)
    if (row["prompt_text"], row["chosen_text"], row["rejected_text"]) != texts:
      return f"{r.where}: texts read back differ"
    p, c, j = _expected_ids(fmt, r, model)
    if (row["prompt"], row["chosen"], row["rejected"], row["line"]) != (p, c, j, [r.line]):
      return f"{r.where}: tokens read back differ"
  return None


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory):
  return build_chat_model(str(tmp_path_factory.mktemp("llama3")), "llama3")


@pytest.fixture(scope="module")
def earlier_imports(tmp_path_factory, chat_model):
  """An import of each format's seed file, copied where a case writes over it."""
  root = tmp_path_factory.mktemp("earlier")
  for fmt, seed in SEEDS.items():
    assert ip.main([f"--input={os.path.join(FIXTURES, seed)}", f"--format={fmt}",
                    f"--output={root / fmt}"] + (
                        [f"--vocab={chat_model}"] if fmt == "chat" else [])) == 0
  return root


@pytest.mark.parametrize("fmt", sorted(SEEDS))
def test_fuzzed_files_import_whole_or_end_with_one_line(tmp_path, earlier_imports, chat_model,
                                                        fmt):
  failures, outcomes = [], {0: 0, 2: 0}
  for index in range(CASES):
    problem, rc = _check_case(str(tmp_path), fmt, index, str(earlier_imports / fmt),
                              chat_model)
    if problem:
      failures.append(f"_case({fmt!r}, {index}) [{_case(fmt, index)[0]}]: {problem}")
    else:
      outcomes[rc] += 1
  assert not failures, f"{len(failures)} of {CASES} cases failed:\n" + "\n".join(failures[:40])
  # The mutations are not all fatal, nor all harmless.
  assert outcomes[0] > CASES // 20 and outcomes[2] > CASES // 2, outcomes


def _parquet_bytes(records: list) -> bytes | None:
  """records as a Parquet file, or None where no Parquet table holds them (a column of
  mixed types)."""
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  try:
    table = pa.Table.from_pylist(records)
  except (pa.ArrowException, TypeError, ValueError, OverflowError):
    return None
  sink = io.BytesIO()
  pq.write_table(table, sink, row_group_size=2)
  return sink.getvalue()


def _parquet_case(fmt: str, index: int) -> tuple[str, bytes]:
  """The index-th mutated Parquet file of fmt's seed records: a record mutation that a
  Parquet table can hold, else truncation or byte flips or insertions of the file."""
  rng = random.Random(f"parquet-{fmt}-{index}")
  with open(os.path.join(FIXTURES, SEEDS[fmt]), "rb") as f:
    lines = [l for l in f.read().split(b"\n") if l.strip()]
  # A Parquet column has one type: the chat records whose fields are all messages, and
  # ids as text.
  lines = [json.dumps({k: str(v) if k == "id" else v for k, v in json.loads(l).items()}).encode()
           for l in lines if not any(isinstance(v, str) for k, v in json.loads(l).items()
                                     if k != "id" and fmt == "chat")]
  if rng.random() < 0.6:
    i = rng.randrange(len(lines))
    what, line = _mutate_record(rng, lines[i])
    try:
      data = _parquet_bytes([json.loads(l) for l in lines[:i] + [line] + lines[i + 1:]])
    except (ValueError, RecursionError):
      data = None
    if data is not None:
      return f"record {i}: {what}", data
  data = bytearray(_parquet_bytes([json.loads(l) for l in lines]))
  kind = rng.choice(["truncate", "flip", "insert"])
  if kind == "truncate":
    at = rng.randrange(len(data) + 1)
    return f"truncated at byte {at}", bytes(data[:at])
  return fuzz_bytes.flip_or_insert(rng, bytes(data), kind)


@pytest.mark.parametrize("fmt", PARQUET_FORMATS)
def test_fuzzed_parquet_files_import_whole_or_end_with_one_line(tmp_path, earlier_imports,
                                                                chat_model, fmt):
  failures, outcomes = [], {0: 0, 2: 0}
  for index in range(PARQUET_CASES):
    problem, rc = _check_case(str(tmp_path), fmt, index, str(earlier_imports / fmt),
                              chat_model, parquet=True)
    if problem:
      failures.append(f"_parquet_case({fmt!r}, {index}) [{_parquet_case(fmt, index)[0]}]: "
                      f"{problem}")
    else:
      outcomes[rc] += 1
  assert not failures, (f"{len(failures)} of {PARQUET_CASES} cases failed:\n" +
                        "\n".join(failures[:40]))
  assert outcomes[0] > PARQUET_CASES // 20 and outcomes[2] > PARQUET_CASES // 4, outcomes
