"""A stale online run (`rl.staleness` = k) stopped and resumed ends bitwise equal to
an uninterrupted one: the parameters it samples with (k steps old) are part of its
checkpoint (`rollouts.StaleParams`), so its first k steps after the resume sample
with the same parameters as the run that never stopped.

Each run is the tiny online config against the golden judge, in this process
(`main.run`); the interruption is a SIGTERM after a step (`alignment.faults`'s
`term@after_step`: the run saves its checkpoint there and stops, as on a
preemption notice), and the same call again resumes it. Compared: every logged
number but timings, the D_online stream (tokens, verdicts, each pair's sampling
step) and the exported parameters, exactly. The overlap (the next step sampled and
judged before this step's update) changes timing only, so one baseline per k
serves both.
"""
import os

import numpy as np
import pytest

from alignment import checkpoint
from alignment import config as config_lib
from alignment import main as main_lib
from alignment.data import stream
import same_run  # tests/same_run.py

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 8

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _config(k: int, overlap: bool):
  c = config_lib.load(os.path.join(ROOT, "configs", "online.py:tiny"))
  config_lib.apply_overrides(c, [
      "judge.kind='golden'", f"rl.staleness={k}", f"rl.overlap={overlap}",
      f"train.num_steps={STEPS}", "train.checkpoint_every=100", "train.log_every=1",
      "train.async_checkpoint=False", f"eval.every={STEPS}", "optimizer.learning_rate=0.003"])
  return c


@pytest.fixture(scope="module")
def baselines(tmp_path_factory):
  base = tmp_path_factory.mktemp("stale")
  for k in (1, 4):
    main_lib.run(_config(k, True), str(base / f"k{k}"))
  return base


@pytest.mark.parametrize("k,overlap,stop", [
    (1, True, 5), (1, False, 5),
    (4, True, 6),   # resumed past k: four recorded parameter sets restored
    (4, False, 3),  # resumed before k steps: the history starts at step 0
])
def test_a_stale_run_stopped_and_resumed_ends_as_an_uninterrupted_one(
    baselines, tmp_path, monkeypatch, k, overlap, stop):
  workdir = tmp_path / "run"
  monkeypatch.setenv("ALIGNMENT_FAULT", f"term@after_step:{stop}")
  main_lib.run(_config(k, overlap), str(workdir))
  assert checkpoint.Checkpointer(str(workdir / "checkpoints")).all_steps() == [stop]
  assert not (workdir / "export").exists()  # stopped: nothing exported
  monkeypatch.delenv("ALIGNMENT_FAULT")
  main_lib.run(_config(k, overlap), str(workdir))

  want = baselines / f"k{k}"
  same_run.assert_same_run(want, workdir)  # metrics and exported parameters, exactly
  lags = [r["sampling_lag"] for r in same_run.deterministic(workdir) if "sampling_lag" in r]
  assert lags == [min(s, k) for s in range(STEPS)]
  got, expected = stream.read_stream(str(workdir / "stream")), stream.read_stream(str(want / "stream"))
  assert set(got) == set(expected)
  for key in expected:
    np.testing.assert_array_equal(np.asarray(got[key]), np.asarray(expected[key]), err_msg=key)
