"""The four loops through the entry point's `run`, on the tiny configs.

The pulse test is the issue's: SFT, then a proxy PM on D_golden, then online
IPO against the proxy and offline IPO on D_golden, a few dozen steps each;
the online policy's proxy win rate against SFT must rise above 1/2.
"""
import os

import numpy as np
import pytest

from alignment import config as config_lib
from alignment import main as main_lib
from alignment.train import bookkeeping

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _config(name, variant="tiny", **overrides):
  c = config_lib.load(os.path.join(ROOT, "configs", f"{name}.py:{variant}"))
  config_lib.apply_overrides(c, [f"{k}={v!r}" for k, v in overrides.items()])
  return c


def _deterministic(records):
  """Metrics that must repeat exactly (timings do not)."""
  return [{k: v for k, v in r.items() if "time" not in k and "per_s" not in k}
          for r in records]


def test_tensorboard_events_are_those_tf_summary_writes(tmp_path):
  """bookkeeping.ScalarEvents writes, value for value, the events of clu's TF summary
  writer (tf.summary.scalar), without TensorFlow ops: only wall times and the file's
  writer name differ."""
  import glob  # pylint: disable=g-import-not-at-top
  from clu.metric_writers.tf import summary_writer  # pylint: disable=g-import-not-at-top
  from tensorboard.backend.event_processing import event_file_loader  # pylint: disable=g-import-not-at-top
  from tensorboard.compat.proto import event_pb2  # pylint: disable=g-import-not-at-top
  values = {"loss": 0.693, "eval/kl": 1e-45, "grad_norm": float("inf"), "x": float("nan"),
            "step_time": 3.0e38, "skipped_batches": 0.0}
  tf_writer = summary_writer.SummaryWriter(str(tmp_path / "tf"))
  ours = bookkeeping.ScalarEvents(str(tmp_path / "ours"))
  for step in (1, 2, 10):
    tf_writer.write_scalars(step, values)
    ours.write_scalars(step, values)
  tf_writer.close()
  ours.close()

  def events(d):
    [path] = glob.glob(os.path.join(d, "events.out.tfevents.*.v2"))
    out = [event_pb2.Event.FromString(r)
           for r in event_file_loader.RawEventFileLoader(path).Load()]
    for e in out:
      e.ClearField("wall_time")
    return out
  theirs, mine = events(str(tmp_path / "tf")), events(str(tmp_path / "ours"))
  assert len(mine) == 1 + 3 * len(values) and mine[0].file_version == "brain.Event:2"
  assert mine[1:] == theirs[1:]


@pytest.fixture(scope="module")
def sft_and_pm(tmp_path_factory):
  base = tmp_path_factory.mktemp("pulse")
  sft = main_lib.run(_config("sft", **{"train.num_steps": 80, "eval.every": 80,
                                       "optimizer.learning_rate": 5e-3}), str(base / "sft"))
  pm = main_lib.run(_config("pm", **{"train.num_steps": 80, "optimizer.learning_rate": 3e-3,
                                     "init.backbone": str(base / "sft" / "export")}),
                    str(base / "pm"))
  return base, sft, pm


@pytest.mark.e2e
@pytest.mark.slow
def test_pulse(sft_and_pm):
  base, sft, pm = sft_and_pm
  assert sft["eval/loss"] < 5.0  # from ~6.3 (log of the vocabulary) at initialisation
  assert 0.0 <= pm["eval/accuracy"] <= 1.0
  policy = str(base / "sft" / "export")
  online = main_lib.run(_config("online", **{
      "train.num_steps": 40, "eval.every": 40, "init.policy": policy,
      "optimizer.learning_rate": 3e-3, "eval.win_prompts": 128,
      "judge.checkpoint": str(base / "pm" / "export")}), str(base / "online"))
  offline = main_lib.run(_config("offline", **{
      "train.num_steps": 20, "eval.every": 20, "init.policy": policy,
      "eval.proxy": str(base / "pm" / "export")}), str(base / "offline"))
  records = bookkeeping.read_metrics(str(base / "online"))
  evals = [r for r in records if "eval/proxy_win_rate" in r]
  assert evals and evals[-1]["step"] == 40
  # The SFT policy against itself scores 1/2 by symmetry; the optimised one must beat
  # it, in the proxy's mean probability and, by more than the noise of 128 prompts
  # (about 0.045), in the share of its verdicts.
  assert evals[-1]["eval/proxy_win_rate"] > 0.5, evals[-1]
  assert evals[-1]["eval/proxy_win_rate_hard"] > 0.55, evals[-1]
  assert evals[-1]["eval/kl"] > 0
  for run in (online, offline):
    assert np.isfinite(run["loss"])
  assert os.path.exists(base / "online" / "export" / "model_config.json")
  assert os.path.isdir(base / "online" / "tb")
  off = [r for r in bookkeeping.read_metrics(str(base / "offline")) if "eval/kl" in r]
  assert off and {"eval/golden_win_rate", "eval/classifier_accuracy",
                  "eval/chosen_logprob_delta", "eval/mean_response_length",
                  "eval/proxy_win_rate"} <= set(off[-1])
  # The aligned policy leaves the project: exported to Hugging Face, transformers loads
  # it with our logits (needs torch and transformers; the rest above does not).
  hf_models = pytest.importorskip("hf_models")
  from alignment.models import export  # pylint: disable=g-import-not-at-top
  assert export.main(["--params", str(base / "online" / "export"),
                      "--output", str(base / "online_hf")]) == 0
  cfg, params = export.read_lm_as_numpy(str(base / "online" / "export"))
  hf = hf_models.transformers.T5ForConditionalGeneration.from_pretrained(base / "online_hf")
  batch = hf_models.batch(11, lp=7, vocab=cfg.vocab_size)
  hf_models.assert_logits_match(hf_models.zoo_logits(cfg, params, *batch),
                                hf_models.hf_t5_logits(hf, *batch[:3]), batch[3])


@pytest.mark.e2e
@pytest.mark.slow
def test_online_resume_equals_uninterrupted(sft_and_pm):
  base, _, _ = sft_and_pm
  common_overrides = {"init.policy": str(base / "sft" / "export"),
                      "judge.checkpoint": str(base / "pm" / "export"),
                      "train.checkpoint_every": 4}
  main_lib.run(_config("online", **common_overrides, **{"train.num_steps": 10}),
               str(base / "whole"))
  # The same run stopped at step 6 (as if killed after its checkpoint), then resumed.
  main_lib.run(_config("online", **common_overrides, **{"train.num_steps": 6}),
               str(base / "split"))
  main_lib.run(_config("online", **common_overrides, **{"train.num_steps": 10}),
               str(base / "split"))
  whole = _deterministic(bookkeeping.read_metrics(str(base / "whole")))
  split = _deterministic(bookkeeping.read_metrics(str(base / "split")))
  assert whole == split
  from alignment.data import stream
  a, b = (stream.read_stream(str(base / d / "stream")) for d in ("whole", "split"))
  for k in ("prompt", "response_1", "response_2", "verdict", "step"):
    np.testing.assert_array_equal(a[k], b[k])


def test_bad_judge_kind_is_a_config_error(tmp_path):
  c = _config("online", **{"judge.kind": "oracle"})
  with pytest.raises(config_lib.ConfigError, match="judge.kind='oracle'"):
    main_lib.run(c, str(tmp_path))


@pytest.fixture(scope="module")
def reward_model(sft_and_pm):
  """A Bradley-Terry reward model on the PM's pairs, from the SFT backbone."""
  base, _, _ = sft_and_pm
  rm = main_lib.run(_config("pm", **{"head": "reward", "train.num_steps": 80,
                                     "optimizer.learning_rate": 3e-3,
                                     "init.backbone": str(base / "sft" / "export")}),
                    str(base / "rm"))
  return base, rm


@pytest.mark.e2e
@pytest.mark.slow
def test_reward_model_trains_and_judges_online(reward_model):
  """The reward model's held-out figures and judge, then online IPO judged by it."""
  import jax  # pylint: disable=g-import-not-at-top
  from alignment import judges, sharding  # pylint: disable=g-import-not-at-top
  from alignment.data import batches as B  # pylint: disable=g-import-not-at-top
  base, rm = reward_model
  assert 0.0 <= rm["eval/accuracy"] <= 1.0
  assert rm["eval/raw_accuracy"] == rm["eval/accuracy"]  # antisymmetric: nothing to debias
  assert abs(rm["eval/position_bias"] - 0.5) < 1e-6
  records = [r for r in bookkeeping.read_metrics(str(base / "rm")) if "loss" in r]
  assert records[0]["loss"] > records[-1]["loss"]  # Bradley-Terry's loss falls
  c = _config("pm")
  mesh, rules = sharding.mesh_and_rules(c.mesh)
  judge = judges.load_model_judge(str(base / "rm" / "export"), c.data, mesh, rules,
                                  head="reward")
  rng = np.random.default_rng(0)
  x = rng.integers(2, 100, (8, c.data.prompt_len)).astype(np.int32)
  y1, y2 = (rng.integers(2, 100, (8, c.data.response_len)).astype(np.int32) for _ in "ab")
  ones = lambda a: np.ones_like(a)
  p = B.PromptBatch(x, ones(x))
  fwd, bwd = judge.compare(p, y1, ones(y1), y2, ones(y2)), judge.compare(p, y2, ones(y2), y1,
                                                                          ones(y1))
  np.testing.assert_allclose(np.asarray(fwd.prob_first) + np.asarray(bwd.prob_first), 1.0,
                             rtol=1e-6)
  r1, r2 = judge.rewards(p, y1, ones(y1)), judge.rewards(p, y2, ones(y2))
  np.testing.assert_allclose(np.asarray(fwd.prob_first), np.asarray(jax.nn.sigmoid(r1 - r2)),
                             rtol=1e-6)
  online = main_lib.run(_config("online", **{
      "train.num_steps": 4, "init.policy": str(base / "sft" / "export"),
      "judge.kind": "reward", "judge.checkpoint": str(base / "rm" / "export")}),
                        str(base / "online_rm"))
  assert np.isfinite(online["loss"]) and 0.5 <= online["judge_prob_chosen"] <= 1.0


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize("method,judge,kl,updates", [
    ("rloo", "reward", "reward", 1),   # RLOO with the scalar RM, k1 penalty in the reward
    ("grpo", "proxy", "k3", 2),        # GRPO with the pairwise PM's sibling wins, k3 loss
    ("rloo", "golden", "exact", 1),    # the golden judge's scores, exact KL as a loss
])
def test_policy_gradient_runs_end_to_end(reward_model, method, judge, kl, updates):
  base, _ = reward_model
  checkpoint = {"reward": base / "rm" / "export", "proxy": base / "pm" / "export",
                "golden": ""}[judge]
  workdir = base / f"online_{method}_{judge}"
  main_lib.run(_config("online", **{
      "rl.method": method, "rl.samples": 4, "rl.kl": kl, "rl.updates": updates,
      "judge.kind": judge, "judge.checkpoint": str(checkpoint), "train.write_stream": False,
      "train.num_steps": 4, "train.log_every": 1, "eval.every": 4 if judge == "reward" else 0,
      "init.policy": str(base / "sft" / "export")}), str(workdir))
  records = [r for r in bookkeeping.read_metrics(str(workdir)) if "loss" in r]
  assert len(records) == 4 and all(np.isfinite(r["loss"]) for r in records)
  if updates == 1:  # the first update starts at the reference (the SFT export)
    assert abs(records[0]["kl_k1"]) < 1e-3
  if judge == "proxy":  # mean P(beating a sibling): 1/2 on average by construction
    assert all(abs(r["reward_mean"] - 0.5) < 1e-5 for r in records)
  if updates == 1:  # one update on what was just sampled: the ratio is 1 up to rounding
    assert all(abs(r["ratio_mean"] - 1.0) < 1e-3 for r in records)
  else:  # the second minibatch is scored by parameters one update newer
    assert any(abs(r["ratio_mean"] - 1.0) > 1e-4 for r in records)
  if judge == "reward":  # the policy's evaluation (KL, win rates) runs as for the others
    assert any("eval/kl" in r for r in bookkeeping.read_metrics(str(workdir)))
  assert os.path.exists(workdir / "export")


@pytest.mark.e2e
@pytest.mark.slow
def test_stale_sampling_is_recorded_and_corrected(tmp_path):
  """Online IPO sampling with parameters 2 steps old writes each pair's sampling
  step into D_online; RLOO with the same staleness and the importance correction
  trains with finite figures."""
  from alignment.data import stream  # pylint: disable=g-import-not-at-top
  common = {"judge.kind": "golden", "rl.staleness": 2, "train.num_steps": 5,
            "train.log_every": 1}
  main_lib.run(_config("online", **common), str(tmp_path / "ipo"))
  records = stream.read_stream(str(tmp_path / "ipo" / "stream"))
  steps = np.asarray(records["step"])
  np.testing.assert_array_equal(np.asarray(records["extra/sampling_step"]),
                                np.maximum(steps - 2, 0))
  lags = [r["sampling_lag"] for r in bookkeeping.read_metrics(str(tmp_path / "ipo"))
          if "sampling_lag" in r]
  assert lags == [0, 1, 2, 2, 2]
  # The overlap (the next batch sampled and judged before this step's update) changes
  # the timing only: the same samples, verdicts and losses without it, bit for bit.
  main_lib.run(_config("online", **common, **{"rl.overlap": False}), str(tmp_path / "seq"))
  sequential = stream.read_stream(str(tmp_path / "seq" / "stream"))
  assert set(sequential) == set(records)
  for key in records:
    np.testing.assert_array_equal(np.asarray(sequential[key]), np.asarray(records[key]),
                                  err_msg=key)
  losses = lambda d: [(r["step"], r["loss"]) for r in bookkeeping.read_metrics(str(d))
                      if "loss" in r]
  assert losses(tmp_path / "seq") == losses(tmp_path / "ipo") and len(losses(tmp_path / "ipo")) == 5
  out = main_lib.run(_config("online", **common, **{
      "rl.method": "rloo", "rl.samples": 4, "rl.is_cap": 2.0, "train.write_stream": False}),
                     str(tmp_path / "rloo"))
  assert np.isfinite(out["loss"]) and out["sampling_lag"] == 2
