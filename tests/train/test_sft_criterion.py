"""SFT trained to a criterion (configs/sft.py `criterion`, `program.Criterion`).

The rule on loss sequences against its written-out form; a run whose held-out
loss levels off stops before its cap, with its checkpoint, record, export and
summary; the same run interrupted twice (SIGTERM at an evaluation step, in
process; SIGKILL after a later evaluation, in a subprocess) and resumed stops at
the same step with the same metrics and parameters, bit for bit; a restart of a
stopped run trains no further; the config's errors.

The runs are the tiny variant (t5-nano) at a high rate (lr 0.01) with a loose
tol (0.1, patience 2), evaluated every 4 steps: the held-out loss falls by more
than 10% over two evaluations at first and by less soon after, so the run
stops well before its cap of 40 steps (near step 24). The stop step is not
written in here: it is read off the evaluations with the written-out rule.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from alignment import checkpoint
from alignment import config as config_lib
from alignment import main as main_lib
from alignment.train import bookkeeping
from alignment.train import program as program_lib
import same_run  # tests/same_run.py
import xla_env  # tests/xla_env.py

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CAP = 40
RUN = {"train.num_steps": CAP, "eval.every": 4, "train.checkpoint_every": 10,
       "optimizer.learning_rate": 0.01, "criterion.patience": 2, "criterion.tol": 0.1}


def written_out_rule(losses, patience, tol):
  """The index of the first evaluation where min(last `patience` losses) >=
  best_before * (1 - tol), best_before the lowest loss before those (losses > 0)."""
  if patience == 0:
    return None
  for n in range(patience, len(losses)):
    last, before = losses[n - patience + 1:n + 1], losses[:n - patience + 1]
    if min(last) >= min(before) * (1 - tol):
      return n
  return None


# ---- the rule -----------------------------------------------------------------


def test_the_rule_stops_where_the_written_out_rule_says():
  first = lambda p, tol, losses: program_lib.Criterion(p, tol).first_stop(losses)
  # The last two (3.5, 3.2) do not beat the best before them (3); at index 3 the
  # last two (3, 3.5) still beat 4.
  assert first(2, 0.0, [5, 4, 3, 3.5, 3.2]) == 4
  assert first(1, 0.01, [5, 4, 3.999]) == 2  # 3.999 is within 1% of 4
  assert first(1, 0.0, [5, 4, 3.999]) is None
  assert first(3, 0.5, [5, 5, 5]) is None  # no evaluation before the last 3
  rng = np.random.default_rng(0)
  fired = 0
  for _ in range(400):
    n = int(rng.integers(1, 16))
    # Falling, noisy, rounded to 0.05 so that ties (a flat loss) occur.
    losses = 1.0 + 6.0 * np.exp(-rng.uniform(0, 0.4) * np.arange(n)) + \
        rng.normal(0, 0.15, n).clip(-0.5, 0.5)
    losses = [round(float(x) * 20) / 20 for x in losses]
    for patience in (1, 2, 3, 4):
      for tol in (0.0, 0.01, 0.1):
        want = written_out_rule(losses, patience, tol)
        assert first(patience, tol, losses) == want, (losses, patience, tol)
        fired += want is not None
  assert fired > 100  # the sequences test both outcomes


def test_patience_zero_never_stops_and_tol_zero_only_on_no_improvement():
  for losses in ([3.0] * 10, [1, 2, 3, 4, 5], [5, 4, 3, 2, 1]):
    for tol in (0.0, 0.5):
      assert program_lib.Criterion(0, tol).first_stop(losses) is None
  assert not program_lib.Criterion(0, 0.01).on
  zero = program_lib.Criterion(1, 0.0)
  assert zero.first_stop([5, 4, 4 - 1e-9, 4 - 2e-9]) is None  # any improvement goes on
  assert zero.first_stop([5, 4, 4.0]) == 2  # an equal loss is no improvement
  assert zero.first_stop([5, 4, 4.5]) == 2
  assert zero.first_stop([5, 4, float("nan")]) == 2  # a NaN improves on nothing


# ---- runs -----------------------------------------------------------------------


def _config(**overrides):
  c = config_lib.load(os.path.join(ROOT, "configs", "sft.py:tiny"))
  config_lib.apply_overrides(c, [f"{k}={v!r}" for k, v in {**RUN, **overrides}.items()])
  return c


_deterministic, _assert_same_run = same_run.deterministic, same_run.assert_same_run


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
  """The uninterrupted run: (its workdir, its summary)."""
  workdir = tmp_path_factory.mktemp("criterion") / "whole"
  return workdir, main_lib.run(_config(), str(workdir))


@pytest.mark.e2e
def test_a_levelling_loss_stops_the_run_before_its_cap(whole):
  workdir, summary = whole
  records = bookkeeping.read_metrics(str(workdir))
  evals = [(r["step"], r["eval/loss"]) for r in records if "eval/loss" in r]
  at = written_out_rule([l for _, l in evals], RUN["criterion.patience"],
                        RUN["criterion.tol"])
  assert at is not None and at == len(evals) - 1, evals  # the last evaluation, no later
  stop = evals[at][0]
  assert stop < CAP
  assert summary["steps_trained"] == stop and summary["criterion_fired"] is True
  assert max(r["step"] for r in records) == stop  # nothing trained past it
  [record] = [r for r in records if "criterion/stopped_at" in r]
  assert record["step"] == record["criterion/stopped_at"] == stop
  assert record["criterion/best_loss"] == min(l for _, l in evals)
  assert record["criterion/best_before"] == min(l for _, l in evals[:-2])
  assert checkpoint.Checkpointer(str(workdir / "checkpoints")).latest_step() == stop
  assert os.path.exists(workdir / "export" / "model_config.json")
  # The final evaluation is the stop's parameters' again.
  assert summary["eval/loss"] == pytest.approx(evals[-1][1], rel=1e-6)


@pytest.mark.e2e
def test_with_patience_zero_it_trains_to_num_steps_as_without_it(whole, tmp_path):
  """Off, the run is a fixed number of steps; on, nothing before the stop changes."""
  workdir, _ = whole
  summary = main_lib.run(_config(**{"criterion.patience": 0, "train.num_steps": 8}),
                         str(tmp_path / "off"))
  assert summary["steps_trained"] == 8 and summary["criterion_fired"] is False
  assert _deterministic(tmp_path / "off") == [r for r in _deterministic(workdir)
                                              if r["step"] <= 8]


def _main_killed(workdir, fault):
  """`python -m alignment.main` on the run's config with ALIGNMENT_FAULT=fault."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
             XLA_FLAGS=xla_env.flags(8), ALIGNMENT_FAULT=fault)
  args = ["--config=configs/sft.py:tiny", *(f"--config.{k}={v!r}" for k, v in RUN.items())]
  return subprocess.run([sys.executable, "-m", "alignment.main", *args,
                         f"--workdir={workdir}"], capture_output=True, text=True, cwd=ROOT,
                        env=env, timeout=600)


@pytest.mark.e2e
@pytest.mark.slow
def test_an_interrupted_run_resumes_to_the_same_stop(whole, tmp_path, monkeypatch):
  workdir, summary = whole
  assert summary["steps_trained"] > 19, "the interruptions below come before the stop"
  run = tmp_path / "run"
  # 1. SIGTERM at step 12, an evaluation step: its checkpoint is saved, its evaluation
  #    is never written; the resumed run evaluates it first.
  monkeypatch.setattr(bookkeeping, "_PREEMPTED", [False])
  monkeypatch.setenv("ALIGNMENT_FAULT", "term@after_step:12")
  out = main_lib.run(_config(), str(run))
  monkeypatch.delenv("ALIGNMENT_FAULT")
  assert out["steps_trained"] == 12 and out["criterion_fired"] is False
  assert not os.path.exists(run / "export")
  assert not [r for r in bookkeeping.read_metrics(str(run)) if "eval/loss" in r and
              r["step"] == 12]
  # 2. SIGKILL after step 19: the evaluation of step 16 is in metrics.jsonl, past the
  #    newest checkpoint (12); the resumed run drops it and evaluates step 16 again.
  killed = _main_killed(run, "kill@after_step:19")
  assert killed.returncode == -9, killed.stderr[-3000:]
  assert checkpoint.Checkpointer(str(run / "checkpoints")).all_steps() == [10, 12]
  assert [r["step"] for r in bookkeeping.read_metrics(str(run)) if "eval/loss" in r][-2:] == \
      [12, 16]
  # 3. Resumed: the same stop, records and parameters as the uninterrupted run.
  out = main_lib.run(_config(), str(run))
  assert (out["steps_trained"], out["criterion_fired"]) == (summary["steps_trained"], True)
  _assert_same_run(workdir, run)


@pytest.mark.e2e
def test_a_stopped_run_started_again_finishes_at_its_stop(whole, tmp_path):
  """No step is trained again; a stop whose record was lost (killed between the
  stop's checkpoint and its record) gets it back, once."""
  import shutil  # pylint: disable=g-import-not-at-top
  workdir, summary = whole
  run = tmp_path / "again"
  shutil.copytree(workdir, run)
  shutil.rmtree(run / "export")
  metrics = run / "metrics.jsonl"
  metrics.write_text("".join(line + "\n" for line in metrics.read_text().splitlines()
                             if "criterion/stopped_at" not in line))
  for _ in range(2):  # without the record, then with it
    out = main_lib.run(_config(), str(run))
    assert (out["steps_trained"], out["criterion_fired"]) == (summary["steps_trained"], True)
    _assert_same_run(workdir, run)


# ---- the config -------------------------------------------------------------------


def _validate(spec, overrides):
  c = config_lib.load(os.path.join(ROOT, "configs", spec))
  config_lib.apply_overrides(c, overrides)
  config_lib.validate(c, 8)
  return c


def test_every_sft_variant_has_the_criterion_off():
  for variant in ("tiny", "default", "paper"):
    c = config_lib.load(os.path.join(ROOT, "configs", f"sft.py:{variant}"))
    assert (c.criterion.patience, c.criterion.tol) == (0, 0.01)
    assert not program_lib.Criterion.of(c.criterion).on


@pytest.mark.parametrize("overrides,message", [
    (["criterion.patience=-1"], "config.criterion.patience=-1: a number of evaluations >= 0"),
    (["criterion.patience=1.5"], "criterion.patience must be int, got 1.5"),
    (["criterion.tol=1.0"], "config.criterion.tol=1.0: a relative improvement in [0, 1)"),
    (["criterion.tol=-0.1"], "config.criterion.tol=-0.1: a relative improvement in [0, 1)"),
    (["criterion.patience=2", "eval.every=0"],
     "config.criterion.patience=2: the criterion watches the held-out loss of the "
     "evaluations: set eval.every > 0 or list eval.steps"),
])
def test_config_errors_name_the_key(overrides, message):
  with pytest.raises(config_lib.ConfigError) as e:
    _validate("sft.py:tiny", overrides)
  assert message in str(e.value) and "\n" not in str(e.value)


def test_the_criterion_needs_evaluations_and_is_sft_s_alone():
  _validate("sft.py:tiny", ["criterion.patience=2", "eval.every=0", "eval.steps=[10, 20]"])
  _validate("sft.py:tiny", ["criterion.patience=0", "eval.every=0"])  # off: none needed
  with pytest.raises(config_lib.ConfigError, match="no section 'criterion'"):
    _validate("pm.py:tiny", ["criterion.patience=2"])
  c = config_lib.load(os.path.join(ROOT, "configs", "pm.py:tiny"))
  with c.unlocked():
    c.criterion = config_lib.ConfigDict(dict(patience=2, tol=0.01))
  with pytest.raises(config_lib.ConfigError, match="config.criterion: only SFT trains to a "
                     "criterion"):
    config_lib.validate(c, 8)
