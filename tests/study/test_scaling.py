"""H5's scaling experiment: its two axes as planned, the fitted best it compares, its
findings on synthetic studies drawn from Gao et al.'s law, and the scaling_smoke study
end to end."""
import json
import os

import numpy as np
import pytest

from alignment import config as config_lib
from alignment import laws, stats, study
from alignment.study import arms as arms_lib
from alignment.study import plots
from alignment.study.experiments import h5

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PASSED = {"gate_passed": True}
P = 48
KL = np.array([0.0, 0.05, 0.2, 0.5, 1.0, 2.0, 3.0, 4.5])


def _study(scale, *overrides):
  c = config_lib.load(os.path.join(ROOT, "configs", f"study.py:{scale}"))
  config_lib.apply_overrides(c, list(overrides))
  return c


def test_the_scaling_preset_plans_both_axes_with_shared_sizes(tmp_path):
  c = _study("scaling")
  stages = {s.name: s for s in study.plan(c, str(tmp_path))}
  for size in ("t5-nano", "t5-mini", "t5-midi"):  # policy sizes other than t5-tiny
    sft = stages[f"sft_{size}"].config
    # Rates scaled by width from t5-tiny's (d_model 64), trained to the criterion.
    width = {"t5-nano": 32, "t5-mini": 128, "t5-midi": 256}[size]
    assert sft.optimizer.learning_rate == pytest.approx(c.sft.learning_rate * 64 / width)
    assert sft.optimizer.schedule == "constant" and sft.eval.every == 250
    assert sft.criterion.patience == 3 and sft.criterion.tol == 0.01
    assert sft.train.num_steps == 4000  # the cap
    assert f"sft_eval_{size}" in stages
    for k in c.seeds:
      on = stages[f"online_ipo_{size}_s{k}"].config
      assert on.model.name == size and on.init.policy.endswith(f"sft_{size}/export")
      assert on.optimizer.learning_rate == pytest.approx(c.online.learning_rate * 64 / width)
      assert on.eval.reference.endswith("/sft/export")  # one reference for every size
      assert on.judge.checkpoint.endswith("/pm/export")  # the study's proxy
  # The foundation's SFT is trained to the same criterion.
  assert stages["sft"].config.criterion.patience == 3
  for size in c.scaling.pm_sizes:  # PMs from their size's SFT; online IPO at t5-tiny
    pm = stages[f"pm_{size}"]
    assert pm.config.init.backbone.endswith(f"sft_{size}/export") and f"sft_{size}" in pm.deps
    for k in c.seeds:
      on = stages[f"online_ipo_pm_{size}_s{k}"]
      assert on.config.model.name == "t5-tiny" and on.arm == f"online_ipo_pm_{size}"
      assert on.config.judge.checkpoint.endswith(f"pm_{size}/export")


def test_a_pm_only_size_trains_no_policy_evaluation(tmp_path):
  c = _study("scaling", "sizes=['t5-tiny','t5-mini']", "scaling.pm_sizes=['t5-nano']")
  names = {s.name for s in study.plan(c, str(tmp_path))}
  assert {"sft_t5-nano", "pm_t5-nano"} <= names and "sft_eval_t5-nano" not in names


def test_h5_and_the_judge_axis_share_their_sizes_stages(tmp_path):
  """A size on both axes is one SFT, one PM and one set of online runs (planned by
  whichever comes first), whoever lists it."""
  c = _study("full", "scaling.pm_sizes=['t5-mini']")
  stages = study.plan(c, str(tmp_path))
  names = [s.name for s in stages]
  for name in ("sft_t5-mini", "pm_t5-mini", "online_ipo_pm_t5-mini_s0"):
    assert names.count(name) == 1, name
  by = {s.name: s for s in stages}
  assert by["pm_t5-mini"].config.optimizer.learning_rate == pytest.approx(
      c.pm.learning_rate * 64 / 128)


@pytest.mark.parametrize("overrides, message", [
    (["sizes=['t5-nano','t5-huge']"], r"study.sizes=.*each a zoo model"),
    (["scaling.pm_sizes=['t5-mini','t5-mini']"], r"study.scaling.pm_sizes=.*once"),
    (["size_lr='muP'"], "choose width or same"),
    (["sft.criterion.every=10", "sft.criterion.patience=0"], r"study.sft.criterion"),
])
def test_scaling_settings_that_cannot_run_are_refused(tmp_path, overrides, message):
  c = _study("scaling_smoke", *overrides)
  with pytest.raises(config_lib.ConfigError, match=message):
    study.plan(c, str(tmp_path))


def test_size_lr_same_keeps_every_rate(tmp_path):
  c = _study("scaling", "size_lr='same'")
  stages = {s.name: s for s in study.plan(c, str(tmp_path))}
  assert stages["sft_t5-midi"].config.optimizer.learning_rate == c.sft.learning_rate
  assert stages["online_ipo_t5-midi_s0"].config.optimizer.learning_rate == \
      c.online.learning_rate


# ---------------------------------------------------------------------------
# Synthetic studies drawn from the law
# ---------------------------------------------------------------------------


class Arms:
  """Runs and ArmData whose golden scores follow start + R(d) of Gao et al.'s RL law
  (per-prompt noise and a per-run offset), win rates a rising-then-falling curve."""

  def __init__(self, seed=0):
    self.rng = np.random.default_rng(seed)
    self.runs, self.data = [], {}

  def add(self, arm, mode, group, start, alpha, beta, win_peak=0.6, seeds=3):
    d = laws.distance(KL)
    score = start + laws.predict("rl", alpha, beta, d)
    j = len(KL)
    win_curve = 0.5 + (win_peak - 0.5) * np.sin(np.linspace(0, 2.5, j))
    sc = (score[None, :, None] + 0.02 * self.rng.standard_normal((seeds, 1, 1)) +
          0.2 * self.rng.standard_normal((seeds, j, P)))
    sc[:, 0, :] = start + 0.2 * self.rng.standard_normal((1, P))  # one SFT point
    win = win_curve[None, :, None] + 0.05 * self.rng.standard_normal((seeds, j, P))
    self.data[arm] = stats.ArmData(np.arange(j) * 10, np.tile(KL, (seeds, 1)), win,
                                   score=sc)
    self.runs += [{"name": f"{arm}_s{k}", "arm": arm, "mode": mode, "group": group,
                   "algorithm": "ipo", "data": "x", "points": [{}]} for k in range(seeds)]
    return self

  def context(self):
    return arms_lib.Context(self.runs, self.data, resamples=300, seed=1)


def _scaling_study():
  return _study("scaling", "sizes=['t5-nano','t5-tiny','t5-mini']",
                "scaling.pm_sizes=['t5-mini']")


def _policy_axis(online_alpha, offline_alpha, starts=(0.0, 0.3, 0.6)):
  a = Arms()
  a.add("online_ipo", "online", "fig1", starts[1], online_alpha[1], 0.5, win_peak=0.65)
  a.add("offline_ipo", "offline", "fig1", starts[1], offline_alpha[1], 0.5, win_peak=0.55)
  for size, i in (("t5-nano", 0), ("t5-mini", 2)):
    a.add(f"online_ipo_{size}", "online", "h5", starts[i], online_alpha[i], 0.5)
    a.add(f"offline_ipo_{size}", "offline", "h5", starts[i], offline_alpha[i], 0.5)
  return a


def test_the_fitted_best_is_the_law_at_its_peak_or_at_the_reach():
  a = Arms()
  a.add("peaks", "online", "h5", 1.0, 0.4, 0.5)    # d* = exp(-0.2) = 0.82, within reach
  a.add("rises", "online", "h5", 1.0, 0.8, -0.1)   # never turns down: at d_max
  ctx = a.context()
  best = arms_lib.law_best(ctx, "peaks")
  d_star = np.exp(0.4 / 0.5 - 1)
  assert best[0] == pytest.approx(1.0 + 0.5 * d_star, abs=0.03)
  lo, hi = ctx.value(lambda: best)["interval"]
  assert lo <= 1.0 + 0.5 * d_star <= hi
  d_max = np.sqrt(KL[-1])
  assert arms_lib.law_best(ctx, "rises")[0] == pytest.approx(
      1.0 + laws.predict("rl", 0.8, -0.1, d_max), abs=0.05)


def test_finding_6_reads_the_fitted_bests_across_policy_sizes():
  c = _scaling_study()
  ctx = _policy_axis(online_alpha=(0.4, 0.5, 0.6), offline_alpha=(0.2, 0.3, 0.4)).context()
  f = h5.finding_6(ctx, PASSED, c)
  assert f["id"] == 6 and f["verdict"] == "reproduced", f["parts"]
  claims = [p["claim"] for p in f["parts"]]
  assert claims[0] == "online fitted best t5-tiny - t5-nano > 0"
  assert [p["status"] for p in f["parts"]].count("shown") == 2  # the gap's change
  # A larger policy that does worse contradicts it.
  ctx = _policy_axis(online_alpha=(0.4, 0.5, 0.6), offline_alpha=(0.2, 0.3, 0.4),
                     starts=(0.6, 0.3, 0.0)).context()
  assert h5.finding_6(ctx, PASSED, c)["verdict"] == "not reproduced"


def test_finding_8_reads_beta_and_the_fitted_best_across_proxy_sizes():
  c = _scaling_study()
  a = _policy_axis(online_alpha=(0.4, 0.5, 0.6), offline_alpha=(0.2, 0.3, 0.4))
  a.add("online_ipo_pm_t5-mini", "online", "h5", 0.3, 0.5, 0.25)  # peaks later, higher
  f = h5.finding_8(a.context(), PASSED, c)
  assert f["id"] == 8 and f["verdict"] == "reproduced", f["parts"]
  assert "beta with the t5-tiny PM - with the t5-mini PM > 0" in f["parts"][1]["claim"]
  b = _policy_axis(online_alpha=(0.4, 0.5, 0.6), offline_alpha=(0.2, 0.3, 0.4))
  b.add("online_ipo_pm_t5-mini", "online", "h5", 0.3, 0.5, 1.0)   # over-optimises sooner
  assert h5.finding_8(b.context(), PASSED, c)["verdict"] == "not reproduced"


def test_the_section_tables_both_axes_and_draws_them(tmp_path):
  c = _scaling_study()
  a = _policy_axis(online_alpha=(0.4, 0.5, 0.6), offline_alpha=(0.2, 0.3, 0.4))
  a.add("online_ipo_pm_t5-mini", "online", "h5", 0.3, 0.5, 0.25)
  ctx = a.context()
  s = h5.EXPERIMENT.section(ctx, PASSED, c)
  block = s.results["scaling"]
  assert [r["size"] for r in block["policy"]] == ["t5-nano", "t5-tiny", "t5-mini"]
  assert [r["size"] for r in block["proxy"]] == ["t5-tiny", "t5-mini"]
  assert block["policy"][0]["params"] < block["policy"][1]["params"]
  assert set(block["trend"]["policy"]) == {"online_alpha_per_decade", "online_beta_per_decade"}
  # The online alpha rises with size in the data: its slope per decade is positive.
  assert block["trend"]["policy"]["online_alpha_per_decade"]["interval"][0] > 0
  text = "\n".join(s.lines)
  assert "| t5-mini | 1,313,152 | - | - |" in text and "Proxy axis" in text
  assert set(s.figures) == {"scaling.png", "laws_h5.png"}
  plots.plot_scaling(block, str(tmp_path / "scaling.png"))
  assert (tmp_path / "scaling.png").stat().st_size > 10000


# ---------------------------------------------------------------------------
# End to end
# ---------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.slow
def test_scaling_smoke_runs_both_axes_and_reports_them(tmp_path):
  c = _study("scaling_smoke")
  out = study.run(c, str(tmp_path))
  results = json.loads((tmp_path / "results.json").read_text())
  block = results["scaling"]
  assert [r["size"] for r in block["policy"]] == ["t5-nano", "t5-tiny"]
  assert {r["size"] for r in block["proxy"]} == {"t5-nano", "llama-nano"}  # both families
  for r in block["policy"]:
    assert 0 < r["sft"]["steps_trained"] <= c.sft.steps
    assert "online_law" in r and "offline_law" in r
  found = {f["id"]: f for f in results["findings"]}
  assert {6, 8} <= set(found)
  for f in (found[6], found[8]):  # one or two seeds: shown, never voted
    assert not [p for p in f["parts"] if p["status"] == "voted"]
  assert {"scaling.png", "laws_h5.png"} <= set(out["plots"])
  report = (tmp_path / "report.md").read_text()
  assert "## H5 scaling" in report and "Policy axis" in report and "Proxy axis" in report
