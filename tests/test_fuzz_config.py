"""Config input that broke loading once ends in one ConfigError line naming the key."""
import os

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
