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
from alignment.study import plots, rate_search
from alignment.study import stages as stages_lib
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
  assert c.sizes == ["t5-nano", "t5-tiny", "t5-mini"]
  for size in ("t5-nano", "t5-mini"):  # policy sizes other than t5-tiny
    sft = stages[f"sft_{size}"].config
    # Rates scaled by width from t5-tiny's (d_model 64), trained to the criterion.
    width = {"t5-nano": 32, "t5-mini": 128}[size]
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


def test_each_sft_chooses_its_rate_from_pilots_and_its_pms_take_the_factor(tmp_path):
  c = _study("scaling")
  stages = {s.name: s for s in study.plan(c, str(tmp_path))}
  grid = list(c.sft.rates)
  assert grid == [1.0, 0.3, 0.1] and c.sft.pilot_steps == 500
  for size in ("t5-nano", "t5-tiny", "t5-mini"):
    sft = "sft" if size == "t5-tiny" else f"sft_{size}"
    final = stages[sft]
    planned = final.config.optimizer.learning_rate
    pilots = [f"{sft}_lr{i}" for i in range(len(grid))]
    assert final.deps == tuple(pilots) and final.params["rates"] == grid
    assert final.resolve == rate_search.SftRate(tuple(pilots), tuple(grid), planned)
    for name, factor in zip(pilots, grid):  # the run's first 500 steps at each rate
      pc = stages[name].config
      assert stages[name].kind == "sft" and not stages[name].deps
      assert pc.optimizer.learning_rate == pytest.approx(planned * factor)
      assert pc.train.num_steps == 500 and pc.eval.every == 500
      assert pc.criterion.patience == 0 and pc.optimizer.schedule == "constant"
      assert pc.optimizer.warmup_steps == final.config.optimizer.warmup_steps
      assert pc.seed == final.config.seed and pc.data.task == final.config.data.task
  for pm, sft in (("pm", "sft"), ("pm_t5-mini", "sft_t5-mini")):
    st = stages[pm]
    assert st.resolve == rate_search.BackboneRate(sft, st.config.optimizer.learning_rate)
  # Another grid is another SFT, and another PM downstream of it.
  other = {s.name: s for s in study.plan(_study("scaling", "sft.rates=[1.0, 0.5]"),
                                           str(tmp_path))}
  assert stages_lib.own_hash(other["sft"]) != stages_lib.own_hash(stages["sft"])
  before = stages_lib.stage_hashes(list(stages.values()))
  after = stages_lib.stage_hashes(list(other.values()))
  assert before["sft_lr0"] == after["sft_lr0"] and before["pm"] != after["pm"]
  # Without a grid the plan is as before: no pilots, nothing resolved at run time.
  plain = {s.name: s for s in study.plan(_study("default"), str(tmp_path / "d"))}
  assert not [n for n in plain if "_lr" in n]
  assert all(s.resolve is None for s in plain.values())


def _finished(workdir, name, summary=None, resolved=None, metrics=()):
  d = workdir / name
  d.mkdir(parents=True, exist_ok=True)
  (d / "STAGE.json").write_text(json.dumps({"summary": summary or {},
                                            **({"resolved": resolved} if resolved else {})}))
  if metrics:
    (d / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))


def test_the_rate_search_chooses_the_lowest_finite_pilot_loss(tmp_path):
  assert rate_search.choose([1.3, 1.1, 1.2]) == 1
  assert rate_search.choose([1.1, 1.1, 1.0 + 0.1]) == 0  # a tie: the first listed
  assert rate_search.choose([float("nan"), 1.5, float("inf")]) == 1
  with pytest.raises(rate_search.RateSearchError, match="no pilot ended"):
    rate_search.choose([float("nan"), None])
  for i, loss in enumerate((1.40, 1.25, 1.31)):
    _finished(tmp_path, f"sft_x_lr{i}", {"eval/loss": loss})
  search = rate_search.SftRate(("sft_x_lr0", "sft_x_lr1", "sft_x_lr2"), (1.0, 0.3, 0.1), 2e-3)
  got = search(str(tmp_path))
  assert got["overrides"] == {"optimizer.learning_rate": pytest.approx(6e-4)}
  assert got["factor"] == 0.3 and got["pilot"] == "sft_x_lr1"
  _finished(tmp_path, "sft_x", resolved=got)
  pm = rate_search.BackboneRate("sft_x", 1e-3)(str(tmp_path))
  assert pm["overrides"]["optimizer.learning_rate"] == pytest.approx(3e-4)
  with pytest.raises(rate_search.RateSearchError, match="'sft_y' has not finished"):
    rate_search.BackboneRate("sft_y", 1e-3)(str(tmp_path))
  with pytest.raises(rate_search.RateSearchError, match="'sft_x_lr3' has not finished"):
    rate_search.SftRate(("sft_x_lr0", "sft_x_lr3"), (1.0, 0.5), 1e-3)(str(tmp_path))


def test_the_axes_set_up_checks_make_their_findings_inconclusive(tmp_path):
  c = _scaling_study()
  a = _policy_axis(online_alpha=(0.4, 0.5, 0.6), offline_alpha=(0.2, 0.3, 0.4))
  a.add("online_ipo_pm_t5-mini", "online", "h5", 0.3, 0.5, 0.25)
  a.runs = [dict(r, points=[{}]) for r in a.runs]
  for sft, loss in (("sft_t5-nano", 1.2), ("sft", 1.0), ("sft_t5-mini", 0.9)):
    _finished(tmp_path, sft, {"eval/loss": loss})
  for pm, acc in (("pm", 0.65), ("pm_t5-mini", 0.66)):
    _finished(tmp_path, pm, metrics=[{"eval/accuracy": acc, "eval/pairs": 1000}])
  ctx = arms_lib.Context(a.runs, a.data, resamples=300, seed=1, workdir=str(tmp_path))
  rows = h5.policy_rows(ctx, c)
  assert h5.policy_setup(str(tmp_path), rows) is None
  assert h5.finding_6(ctx, PASSED, c)["verdict"] == "reproduced"
  assert h5.finding_8(ctx, PASSED, c)["verdict"] == "reproduced"
  # t5-mini's SFT ends above t5-tiny's: the policy axis cannot say what size does.
  _finished(tmp_path, "sft_t5-mini", {"eval/loss": 1.05})
  f = h5.finding_6(ctx, PASSED, c)
  assert f["verdict"] == "inconclusive" and "set-up check" in f["reason"]
  assert "the t5-mini SFT's held-out loss 1.05 is above the t5-tiny SFT's 1" in f["reason"]
  # A larger PM agreeing below the smaller one's interval ([0.620, 0.679]): likewise.
  _finished(tmp_path, "pm_t5-mini", metrics=[{"eval/accuracy": 0.60, "eval/pairs": 1000}])
  f = h5.finding_8(ctx, PASSED, c)
  assert f["verdict"] == "inconclusive" and "the t5-mini PM agrees 0.600" in f["reason"]
  # Within it: the check holds (the claims decide).
  _finished(tmp_path, "pm_t5-mini", metrics=[{"eval/accuracy": 0.63, "eval/pairs": 1000}])
  assert h5.finding_8(ctx, PASSED, c)["verdict"] == "reproduced"


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
    (["sft.criterion.every=0"], r"study.sft.rates=.*criterion.every > 0"),
    (["sft.pilot_steps=40"], r"pilot_steps=40: .*0 < pilot_steps < sft.steps=20"),
    (["sft.rates=[1.0, 1.0]"], r"study.sft.rates=\[1.0, 1.0\].*distinct positive"),
])
def test_scaling_settings_that_cannot_run_are_refused(tmp_path, overrides, message):
  c = _study("scaling_smoke", *overrides)
  with pytest.raises(config_lib.ConfigError, match=message):
    study.plan(c, str(tmp_path))


def test_size_lr_same_keeps_every_rate(tmp_path):
  c = _study("scaling", "size_lr='same'")
  stages = {s.name: s for s in study.plan(c, str(tmp_path))}
  assert stages["sft_t5-mini"].config.optimizer.learning_rate == c.sft.learning_rate
  assert stages["online_ipo_t5-mini_s0"].config.optimizer.learning_rate == \
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
  # Each SFT ran at the factor of its pilot with the lowest held-out loss (read here from
  # the pilots' own records), and the PM from its backbone at the same factor.
  for sft, pm in (("sft", "pm"), ("sft_t5-tiny", ""), ("sft_llama-nano", "pm_llama-nano")):
    info = json.loads((tmp_path / sft / "STAGE.json").read_text())
    losses = [json.loads((tmp_path / f"{sft}_lr{i}" / "STAGE.json").read_text())[
        "summary"]["eval/loss"] for i in range(len(c.sft.rates))]
    factor = c.sft.rates[int(np.argmin(losses))]
    assert info["resolved"]["factor"] == factor
    lr = info["config"]["optimizer"]["learning_rate"]
    pilot = json.loads((tmp_path / f"{sft}_lr{int(np.argmin(losses))}" / "STAGE.json")
                       .read_text())
    assert lr == pilot["config"]["optimizer"]["learning_rate"]  # the chosen pilot's rate
    if pm:
      got = json.loads((tmp_path / pm / "STAGE.json").read_text())
      planned = {s.name: s for s in study.plan(c, str(tmp_path))}[pm].config
      assert got["config"]["optimizer"]["learning_rate"] == pytest.approx(
          planned.optimizer.learning_rate * factor)
  assert any(r["sft"]["rate_factor"] is not None for r in block["policy"])
  found = {f["id"]: f for f in results["findings"]}
  assert {6, 8} <= set(found)
  for f in (found[6], found[8]):  # one or two seeds: shown, never voted
    assert not [p for p in f["parts"] if p["status"] == "voted"]
  assert {"scaling.png", "laws_h5.png"} <= set(out["plots"])
  report = (tmp_path / "report.md").read_text()
  assert "## H5 scaling" in report and "Policy axis" in report and "Proxy axis" in report
