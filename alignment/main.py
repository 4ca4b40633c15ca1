"""`python -m alignment.main --config=configs/<exp>.py:<variant> --workdir=DIR`.

Thin on purpose: parse flags, then `run(config, workdir)`, which tests call
with tiny configs too. Overrides: `--config.optimizer.learning_rate=3e-5`
(the config is locked: a misspelt key is an error). A gin experiment file can
replace --config: `--gin_file=configs/gin/online_tiny.gin` (see
`alignment.gin_config.from_gin`). The experiment kind (sft, pm, offline,
online, eval) comes from `config.experiment`. A run resumes by itself from the newest
complete checkpoint in DIR.

User errors (a bad config, bad or damaged data, an unusable checkpoint, a
workdir held by another run), a NaN/Inf in training and a full disk end with
one line on stderr naming the key, file, record, step or lock holder, and exit
status 2; no traceback. `run` holds the workdir's lock (`alignment.lock`)
while it writes there. In a multi-process run, a process that dies
(or stops responding) is named in one line by the others, which exit with
status 3 (`distributed.EXIT_LOST`): rerunning the same command resumes.
"""
from __future__ import annotations

import errno
import importlib
import sys
from typing import Optional

from absl import app, flags

from alignment import config as config_lib
from alignment import gin_config
from alignment import lock

_CONFIG = flags.DEFINE_string("config", None, "experiment config: configs/<exp>.py:<variant>")
_GIN = flags.DEFINE_string("gin_file", None, "gin experiment file (instead of --config)")
_WORKDIR = flags.DEFINE_string("workdir", None, "run directory (checkpoints, logs)")

# experiment name -> module with run(config, workdir)
RUNNERS = {
    "sft": "alignment.train.sft",
    "pm": "alignment.train.preference_model",
    "offline": "alignment.train.offline",
    "online": "alignment.train.online",
    "eval": "alignment.evaluation",
}


def user_errors() -> tuple[type[Exception], ...]:
  """Exception types that mean 'the user gave us something wrong'."""
  from alignment import checkpoint  # pylint: disable=g-import-not-at-top
  from alignment.train import bookkeeping  # pylint: disable=g-import-not-at-top
  errors: list[type[Exception]] = [config_lib.ConfigError, checkpoint.CheckpointError,
                                   bookkeeping.NonFiniteError, lock.LockError]
  from alignment.data import pipeline, stream  # pylint: disable=g-import-not-at-top
  errors += [pipeline.DataStateError, stream.StreamError]
  return tuple(errors)


def error_line(e: BaseException) -> Optional[str]:
  """The one line a user sees for their error or a full disk; None for anything else
  (a bug, whose traceback is wanted)."""
  if isinstance(e, user_errors()):
    return f"error: {e}"
  if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
    where = f" (writing {e.filename})" if e.filename else ""
    return (f"error: no space left on device{where}: nothing half-written was kept; free "
            "space and rerun the same command to continue from the last complete checkpoint")
  return None


def run(config, workdir: str):
  """Validates the config, takes the workdir's lock, then runs the experiment; returns
  its final metrics."""
  import jax  # pylint: disable=g-import-not-at-top
  config_lib.validate(config, jax.device_count())
  with lock.held(workdir):
    module = importlib.import_module(RUNNERS[config.experiment])
    return module.run(config, workdir)


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
  """Separates `--config.a.b=v` overrides from the flags absl parses."""
  rest, overrides = [], []
  for arg in argv:
    if arg.startswith("--config."):
      overrides.append(arg[len("--config."):])
    else:
      rest.append(arg)
  return rest, overrides


def load_config(config_spec, gin_file, overrides):
  """The locked config from --config or --gin_file, with overrides applied."""
  if gin_file:
    if config_spec:
      raise config_lib.ConfigError("give --config or --gin_file, not both")
    config = gin_config.from_gin(gin_file)
  elif config_spec:
    config = config_lib.load(config_spec)
  else:
    raise config_lib.ConfigError("--config=configs/<exp>.py:<variant> is required")
  return config_lib.apply_overrides(config, overrides, where="--config")


def main(argv, overrides=()):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not _WORKDIR.value:
    raise app.UsageError("--workdir is required")
  from alignment import distributed  # pylint: disable=g-import-not-at-top
  try:
    distributed.initialize()  # a no-op unless ALIGNMENT_* is set or on a TPU VM
    config = load_config(_CONFIG.value, _GIN.value, overrides)
    run(config, _WORKDIR.value)
    distributed.finished()
  except distributed.DistributedError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except Exception as e:  # pylint: disable=broad-except
    line = error_line(e)
    if line is None:
      distributed.wait_for_lost_peer()  # a dead peer's broken collective: name the peer
      raise
    print(line, file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  _argv, _overrides = split_overrides(sys.argv)
  app.run(lambda a: main(a, _overrides), argv=_argv)
