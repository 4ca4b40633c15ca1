"""Test set-up: 8 fake CPU devices, set before JAX starts (docs/conventions.md, "Tests").

XLA's CPU back end runs at its cheapest to compile in the tests (tests/xla_env.py,
CODEGEN: LLVM unoptimised, the elemental fusion emitter): the programs are the same,
compiling them takes about half the CPU time, and every
process a test starts gets the same flags (`xla_env.flags(devices)`), so runs
compared across processes are compiled alike.

XLA's persistent compilation cache is shared by the whole test session: both
pytest-xdist workers and every process a test starts (`python -m
alignment.main`, studies, multi-process jobs) read and write one directory,
so a program compiled once (the tiny models' steps recur across many tests)
is not compiled again. Every program is kept, however fast it compiled
(JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0, which a study honours too): a
process a test starts reads its programs rather than compiling them again. A
cached executable is the program the compiler would build again, so bitwise
comparisons are unaffected; tests that count compilations turn the cache off
(tests/train/test_recompiles.py).
"""
import os
import shutil
import tempfile
import time

import xla_env  # tests/xla_env.py: the session's flags, for subprocesses too

os.environ["XLA_FLAGS"] = xla_env.session_flags(os.environ.get("XLA_FLAGS", ""), 8)
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


def _session_xla_cache() -> str:
  """One directory per test session (xdist gives its workers one run id); those
  of sessions older than a day are removed."""
  top = os.path.join(tempfile.gettempdir(), "alignment-tests-xla")
  os.makedirs(top, exist_ok=True)
  for old in os.listdir(top):
    path = os.path.join(top, old)
    try:
      if time.time() - os.path.getmtime(path) > 86400:
        shutil.rmtree(path, ignore_errors=True)
    except OSError:
      pass
  run = os.environ.get("PYTEST_XDIST_TESTRUNUID") or f"pid{os.getpid()}"
  return os.path.join(top, run)


os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _session_xla_cache())
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("ALIGNMENT_XLA_CACHE", os.environ["JAX_COMPILATION_CACHE_DIR"])

import jax  # noqa: E402  (must follow the flags above)

jax.config.update("jax_threefry_partitionable", True)

assert len(jax.devices()) == 8, "conftest must run before anything imports jax"


# The whole-experiment files, longest first (their measured times in a clean-clone
# `make test`, 2026-12-06): `make test` runs them before everything else
# (Makefile: --no-loadscope-reorder keeps this order), so that the two workers share
# the long files from the start and the many short ones fill in after; xdist's own
# order (files with the most tests first) left these few-test files for last, one
# worker busy minutes after the other had finished.
# The two multi-process files are kept apart from the storm's parallel studies and
# from each other, so that their heartbeats never meet the heaviest load.
LONGEST_FIRST = (
    "study/test_storm.py", "study/test_study.py", "distributed/test_multiprocess_study.py",
    "train/test_reliability.py", "distributed/test_multiprocess.py", "study/test_scaling.py",
    "tools/test_bench.py", "train/test_train.py", "study/test_study_real.py",
    "distributed/test_sharding.py", "train/test_roles.py",
)


def pytest_collection_modifyitems(items):
  """Moves LONGEST_FIRST's files to the front, in that order; every file keeps its
  own tests' order, the rest their collected order."""
  rank = {f"tests/{name}": i for i, name in enumerate(LONGEST_FIRST)}
  def key(item):
    path = item.nodeid.split("::", 1)[0]
    return rank.get(path, len(rank))
  items.sort(key=key)  # stable
