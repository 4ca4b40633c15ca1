"""Fuzzed config input: overrides and gin files load or end in one ConfigError line.

Drives what `python -m alignment.main` does before anything trains:
`main.load_config(--config, --gin_file, overrides)` then
`config.validate(config, 8)`; main prints a ConfigError as its one line and
exits 2, so anything else raised is a traceback.

Overrides (300 cases, each 1-3 `a.b=value` items on a tiny config of every
experiment): existing keys, sections, misspelt keys, keys below a leaf
(`data.task.x`), empty parts, no `=`; values of the right type (zero,
negative, huge, NaN) and of others, malformed literals, deep nesting, 5000
digits, newlines. Either every item is set (and reads back as parsed) and the
config validates, or one single-line ConfigError names a key.

Gin files (300 cases): the shipped gin experiment, truncated, with bytes
flipped, lines dropped or doubled, and bindings added: unknown sections and
keys, scopes, references, imports and includes, undefined and cyclic macros,
odd base configs, malformed literals, deep nesting, invalid UTF-8. Either it
loads and validates, or one single-line ConfigError names the gin file or a
key. Cases are seeded: a failure names its input. The inputs that broke
loading once are kept as named cases first.
"""
import os
import random
import re

import pytest

from alignment import config as config_lib
from alignment import main as main_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OFFLINE = os.path.join(ROOT, "configs", "offline.py:tiny")


def _load_and_validate(spec, gin_file, overrides):
  config = main_lib.load_config(spec, gin_file, overrides)
  config_lib.validate(config, 8)
  return config


# (--config, overrides, what the one line says): inputs that once raised something else.
BROKE_OVERRIDES = [
    ("parser stack overflow", OFFLINE, ["loss.beta=" + "-" * 100_000 + "1"],
     "loss.beta must be float, got '-----"),
    ("a 10k-character value", OFFLINE, ["optimizer.schedule='" + "y" * 10_000 + "'"],
     "config.optimizer.schedule='yyyy"),
    ("a 400-digit float", OFFLINE, ["loss.beta=" + "1" * 400], "too large for a float"),
    ("None for a number", OFFLINE, ["train.num_steps=None"],
     "train.num_steps must be int, got None"),
    ("eval batch of 0", os.path.join(ROOT, "configs", "eval.py:tiny"), ["eval.batch_size=0"],
     "config.eval.batch_size=0: must be a positive integer"),
    ("a rule that is no pair", OFFLINE, ["mesh.rules=[1]"],
     "mesh.rules[0]=1: expected (logical name, mesh axes)"),
    ("a config that is no .py", os.path.join(ROOT, "configs") + ":tiny", [],
     "configs: not a Python config file"),
]


@pytest.mark.parametrize("why,spec,overrides,message", BROKE_OVERRIDES,
                         ids=[b[0] for b in BROKE_OVERRIDES])
def test_overrides_that_broke_loading_end_in_one_line(why, spec, overrides, message):
  del why
  with pytest.raises(config_lib.ConfigError) as e:
    _load_and_validate(spec, None, overrides)
  assert message in str(e.value) and "\n" not in str(e.value)
  assert len(str(e.value)) < 500, str(e.value)


# (gin file, what its one line says after the file's name): inputs that once raised
# something else or several lines.
BROKE_GIN = [
    ("invalid UTF-8", b"loss.beta = 0.5\n\xff\n", "not UTF-8 text (byte 16)"),
    ("unterminated string", b"loss.name = '''\n", "gin syntax error: EOF in multi-line string"),
    ("10k nested lists", b"loss.beta = " + b"[" * 10_000 + b"]" * 10_000 + b"\n",
     "gin syntax error: nested too deeply"),
    ("syntax error over lines", b"loss.beta = (1,\nbase.config = 'x'\n",
     "gin syntax error: malformed node or string"),
    ("macro cycle", b"A = %B\nB = %A\nloss.beta = %A\n", ":3: macro %A refers to itself"),
    ("base config a number", b"base.config = 3\n",
     ":1: base.config = 3: expected 'configs/<exp>.py:<arg>'"),
    ("base config missing", b"base.config = 'nosuch.py:tiny'\n",
     ":1: base.config: nosuch.py: no such config file"),
    ("a reference", b"loss.name = @foo\n", "'@foo' - configurable references are not supported; "
     "bind plain values (In bindings string line 1)"),
]


@pytest.mark.parametrize("why,text,message", BROKE_GIN, ids=[b[0] for b in BROKE_GIN])
def test_gin_files_that_broke_loading_end_in_one_line(tmp_path, why, text, message):
  del why
  path = tmp_path / "exp.gin"
  path.write_bytes(text)
  with pytest.raises(config_lib.ConfigError) as e:
    _load_and_validate(None, str(path), [])
  assert str(e.value).startswith(f"{path}") and message in str(e.value), str(e.value)
  assert "\n" not in str(e.value)


# ---------------------------------------------------------------------------
# Fuzzing
# ---------------------------------------------------------------------------

SPECS = [os.path.join(ROOT, "configs", f"{e}.py:tiny") for e in ("sft", "pm", "offline",
                                                                 "online", "eval")]
CASES = 300

VALUES = ["0", "-1", "1", "2", "8", "3.5", "-0.0", "1e-30", "1e999", "-1e999", "nan", "inf",
          "'nan'", "True", "False", "true", "false", "None", "none", "''", "'dpo'", "'ipo'",
          "'float32'", "'bfloat16'", "'0:4'", "'4:8'", "'x'", "[]", "[1]", "[1, 2]", "[[1]]",
          "[['batch', 'data']]", "['a', None]", "()", "(1,)", "{}", "{'a': 1}", "{1}", "1j",
          "b'x'", "...", "[1,", "{'a':", "(1", "'unterminated", '"', "1e", "0x", "0x1f", "1_000",
          "--1", "- 1", "10**9", "__import__('os')", "lambda: 1", "a b", "=", "a=b", "\x00",
          "dätä", "line\nbreak", " 3 ", "1" * 400, "1" * 5000, "[" * 10_000,
          "(" * 300 + ")" * 300, "-" * 100_000 + "1", "'" + "y" * 10_000 + "'"]
KEY_JUNK = ["", ".", "..", "a..b", ".data", "data.", "config.data.task", "nosuch",
            "nosuch.key", "__class__", "lock", "items", "data.__dict__", "dätä", "data task",
            "data.task.x", "mesh.rules.0", "model.name.x.y", "\n", "data\n.task"]


def _leaves(config, prefix=""):
  out = []
  for key, value in config.items():
    dotted = f"{prefix}{key}"
    out.append(dotted)
    if isinstance(value, config_lib.ConfigDict):
      out += _leaves(value, dotted + ".")
  return out


def _override_case(index: int) -> tuple[str, list[str]]:
  rng = random.Random(f"override-{index}")
  spec = SPECS[index % len(SPECS)]
  keys = _leaves(config_lib.load(spec))
  items = []
  for _ in range(rng.choice([1, 1, 2, 3])):
    key = rng.choice(keys) if rng.random() < 0.75 else rng.choice(KEY_JUNK)
    if rng.random() < 0.1:
      key = key[:-1] + "q" if key else "q"  # misspelt
    if rng.random() < 0.05:
      items.append(key)  # no "="
      continue
    items.append(f"{key}={rng.choice(VALUES)}")
  return spec, items


def _names_a_key(message: str, keys: list[str]) -> bool:
  """The message names a key of the items, or the part of it that is not there, or a
  validated key (config.section.key)."""
  for key in keys:
    parts = key.strip().split(".")
    if any(repr(".".join(parts[:i + 1])) in message or ".".join(parts[:i + 1]) in message
           for i in range(len(parts))):
      return True
  return bool(re.search(r"config\.\w", message))


def _check_override_case(index: int) -> str | None:
  spec, items = _override_case(index)
  try:
    config = _load_and_validate(spec, None, items)
  except config_lib.ConfigError as e:
    message = str(e)
    if "\n" in message or len(message) > 500:
      return f"a ConfigError of several lines, or a long one: {message[:300]!r}"
    keys = [i.partition("=")[0].removeprefix("config.") for i in items]
    if not _names_a_key(message, keys):
      return f"a ConfigError naming no key: {message[:300]!r}"
    return None
  except BaseException as e:  # pylint: disable=broad-except  (the property under test)
    return f"raised {type(e).__name__}: {str(e)[:200]}"
  last = {i.partition("=")[0]: i for i in items}  # a key given twice: the last one counts
  for item in last.values():  # each item was set as parsed
    key, _, text = item.partition("=")
    node = config
    for part in key.strip().removeprefix("config.").split("."):
      node = node[part]
    value = config_lib._parse_value(text.strip())  # pylint: disable=protected-access
    if node != value and node == node and not isinstance(node, (list, tuple)):
      return f"{key} reads back {node!r}, not {value!r}"
  return None


def test_fuzzed_overrides_set_the_key_or_end_in_one_line():
  failures = []
  for index in range(CASES):
    problem = _check_override_case(index)
    if problem:
      items = [i[:50] for i in _override_case(index)[1]]
      failures.append(f"_override_case({index}) {items}: {problem}"[:600])
  assert not failures, f"{len(failures)} of {CASES} cases failed:\n" + "\n".join(failures[:30])


GIN_LINES = [
    "foo.bar = 1", "loss.nme = 'dpo'", "loss.name.x = 1", "experiment.data = 1",
    "experiment.nosuch = 1", "train/loss.name = 'dpo'", "loss.name = @foo", "loss.name = @foo()",
    "loss.beta = %UNDEFINED", "A = %B\nB = %A\nloss.beta = %A", "C = %C\nloss.beta = %C",
    "import os", "include 'other.gin'", "base.config = 3", "base.config = None",
    "base.config = 'configs'", "base.config = '/etc/passwd'", "base.config = 'nosuch.py:tiny'",
    "base.config = 'configs/offline.py:nosuch'", "base.config = ['configs/offline.py']",
    "base.other = 1", "loss.beta = '", "loss.beta = 1e", "loss.name = '''", "loss.beta = (1,",
    "loss.beta = {1: 2}", "loss.beta = [1]", "loss.beta = None", "loss.beta = -1",
    "train.num_steps = 1.5", "train.num_steps = 0x10", "mesh.rules = [1]", "mesh.data = 0",
    "data.batch_size = 0", "loss.name = 'nosuch'", "loss.beta = " + "[" * 10_000 + "]" * 10_000,
    "loss.beta = " + "-" * 100_000 + "1", "loss.beta = " + "1" * 5000, "  loss.beta = 1",
    "loss.beta 1", "loss. = 1", ".beta = 1", "= 1", "loss.beta = 1 2", "loss.beta == 1",
    "\tloss.beta = 1", "loss.beta = \\", "loss.beta = (", "loss.beta = ]",
    "loss.beta = 'a' \\\n 'b'", "# a comment", "", "loss.beta = 0.5  # ok",
]


def _gin_case(index: int) -> tuple[str, bytes]:
  rng = random.Random(f"gin-{index}")
  with open(os.path.join(ROOT, "configs", "gin", "offline_dpo_tiny.gin")) as f:
    text = f.read().replace("'configs/offline.py:tiny'",
                            repr(os.path.join(ROOT, "configs", "offline.py") + ":tiny"))
  lines = text.split("\n")
  done = []
  for _ in range(rng.choice([1, 1, 2, 3])):
    kind = rng.choice(["add", "add", "add", "drop", "double", "truncate", "flip", "utf8"])
    if kind == "add":
      line = rng.choice(GIN_LINES)
      lines.insert(rng.randrange(len(lines) + 1), line)
      done.append(f"added {line[:40]!r}")
    elif kind == "drop" and lines:
      done.append(f"dropped {lines.pop(rng.randrange(len(lines)))[:40]!r}")
    elif kind == "double" and lines:
      i = rng.randrange(len(lines))
      lines.insert(i, lines[i])
      done.append(f"doubled {lines[i][:40]!r}")
    else:
      data = "\n".join(lines).encode()
      at = rng.randrange(len(data) + 1)
      if kind == "truncate":
        data = data[:at]
      elif kind == "flip":
        data = data[:at] + bytes([rng.randrange(32, 127)]) + data[at + 1:]
      else:
        data = data[:at] + rng.choice([b"\xff", b"\xc3", b"\xef\xbb\xbf"]) + data[at:]
      done.append(f"{kind} at byte {at}")
      if kind == "utf8":
        return "; ".join(done), data
      lines = data.decode().split("\n")
  return "; ".join(done), "\n".join(lines).encode()


def _check_gin_case(tmp_path, index: int) -> str | None:
  _, data = _gin_case(index)
  path = tmp_path / f"case{index}.gin"
  path.write_bytes(data)
  try:
    _load_and_validate(None, str(path), [])
  except config_lib.ConfigError as e:
    message = str(e)
    if "\n" in message or len(message) > len(str(path)) + 500:
      return f"a ConfigError of several lines, or a long one: {message[:300]!r}"
    if str(path) not in message and not re.search(r"config\.\w", message):
      return f"a ConfigError naming neither the file nor a key: {message[:300]!r}"
    return None
  except BaseException as e:  # pylint: disable=broad-except  (the property under test)
    return f"raised {type(e).__name__}: {str(e)[:200]}"
  return None


def test_fuzzed_gin_files_load_or_end_in_one_line(tmp_path):
  failures = []
  for index in range(CASES):
    problem = _check_gin_case(tmp_path, index)
    if problem:
      failures.append(f"_gin_case({index}) [{_gin_case(index)[0]}]: {problem}"[:600])
  assert not failures, f"{len(failures)} of {CASES} cases failed:\n" + "\n".join(failures[:30])


@pytest.mark.parametrize("spec", SPECS, ids=[os.path.basename(s) for s in SPECS])
def test_the_unmutated_configs_validate(spec):
  _load_and_validate(spec, None, [])
