"""The online and offline loops compile during their first step only.

A recompile in a loop costs a full XLA compile every step it happens (seconds
on CPU, minutes for a large model on a TPU), and the usual causes are silent:
a Python scalar that changes, a weak type, a shape that drifts, an eager op
on a new shape. Every backend compile is counted through `jax.monitoring`,
and the count taken at the end of each step must not move after step 1.
"""
import os

import flax.linen as nn
import jax
import numpy as np
import pytest

from alignment import checkpoint, programs
from alignment import config as config_lib
from alignment import main as main_lib
from alignment.data import tasks
from alignment.data import vocab as vocab_lib
from alignment.models import heads, zoo
from alignment.train import bookkeeping

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@pytest.fixture(autouse=True)
def _no_persistent_cache():
  """A hit in XLA's persistent cache (tests/conftest.py) is no backend compile:
  these tests count real compiles, so the cache is off while they run, and the
  programs shared in this process (`alignment.programs`: an earlier test's train step
  of the same shape) are forgotten."""
  from jax._src import compilation_cache  # pylint: disable=g-import-not-at-top
  programs.clear()
  enabled = jax.config.jax_enable_compilation_cache
  jax.config.update("jax_enable_compilation_cache", False)
  compilation_cache.reset_cache()
  yield
  jax.config.update("jax_enable_compilation_cache", enabled)
  compilation_cache.reset_cache()


def _config(name, **overrides):
  c = config_lib.load(os.path.join(ROOT, "configs", f"{name}.py:tiny"))
  config_lib.apply_overrides(c, [f"{k}={v!r}" for k, v in overrides.items()])
  return c


def _compiles_by_step(monkeypatch, config, workdir):
  """Runs the loop; returns {step: names of the functions compiled so far}."""
  compiled, seen = [], {}

  def listener(event, duration, **kwargs):
    del duration
    if event == COMPILE_EVENT:
      compiled.append(kwargs.get("fun_name", "?"))

  end_of_step = bookkeeping.Run.end_of_step

  def recording_end_of_step(self, step, *args, **kwargs):
    seen[step] = list(compiled)
    return end_of_step(self, step, *args, **kwargs)

  monkeypatch.setattr(bookkeeping.Run, "end_of_step", recording_end_of_step)
  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    main_lib.run(config, workdir)
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  return seen


def _assert_no_recompiles(seen):
  first, last = min(seen), max(seen)
  assert last - first >= 3, seen.keys()
  assert seen[first], "nothing compiled during the first step: is the listener connected?"
  extra = seen[last][len(seen[first]):]
  assert not extra, f"compiled after step {first}: {extra}"


@pytest.fixture(scope="module")
def random_pm_export(tmp_path_factory):
  """A random t5-nano preference model export: the online loop only needs a judge."""
  cfg = zoo.get("t5-nano", vocab_size=vocab_lib.model_vocab_size(
      tasks.task_vocabulary("env_tiny_prompts")))
  model = heads.PairwisePreferenceModel(cfg)
  x = np.zeros((1, 4), np.int32)
  params = nn.unbox(jax.jit(model.init)(jax.random.key(0), x, x, x, x, x, x)["params"])
  path = str(tmp_path_factory.mktemp("pm") / "export")
  checkpoint.export_params(params, cfg, path)
  return path


@pytest.mark.e2e
def test_online_loop_compiles_only_in_its_first_step(monkeypatch, tmp_path, random_pm_export):
  config = _config("online", **{"train.num_steps": 4, "train.checkpoint_every": 100,
                                "judge.checkpoint": random_pm_export})
  _assert_no_recompiles(_compiles_by_step(monkeypatch, config, str(tmp_path)))


@pytest.mark.e2e
def test_offline_loop_compiles_only_in_its_first_step(monkeypatch, tmp_path):
  config = _config("offline", **{"train.num_steps": 4, "train.checkpoint_every": 100})
  _assert_no_recompiles(_compiles_by_step(monkeypatch, config, str(tmp_path)))


def test_the_listener_counts_backend_compiles():
  compiled = []
  listener = lambda event, duration, **kw: compiled.append(event)
  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    jax.jit(lambda x: x * 3 + 1)(np.arange(3))  # a new function: one compile
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  assert compiled.count(COMPILE_EVENT) == 1
