"""The judge-quality axis (alignment.study.experiments.judge): its crossover rules on
synthetic arms and the stages it plans at the full scale (its smoke run is in
test_study.py, on the smoke study's stages)."""
import json
import os

import numpy as np
import pytest

from alignment import config as config_lib
from alignment import stats
from alignment.study import arms as arms_lib
from alignment.study import plots
from alignment.study.experiments import judge as J
from alignment.study.plan import Planner

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
P = 300
PASSED = {"gate_passed": True}
KL = [0.0, 1.0, 2.0, 4.0]
OFFLINE = [0.5, 0.6, 0.66, 0.62]


def _study(scale="full", **over):
  c = config_lib.load(os.path.join(ROOT, "configs", f"study.py:{scale}"))
  config_lib.apply_overrides(c, [f"{k}={v!r}" for k, v in over.items()])
  return c


def _context(curves: dict, seeds=3):
  """Arms of Fig. 1's offline IPO and of the given online arms ({arm: curve}), per-prompt
  win rates around their curves (a prompt effect shared by every run)."""
  rng = np.random.default_rng(0)
  prompt = 0.15 * rng.standard_normal(P)
  runs, data = [], {}
  for arm, (mode, curve) in {"offline_ipo": ("offline", OFFLINE), **{
      a: ("online", c) for a, c in curves.items()}}.items():
    win = (np.asarray(curve)[None, :, None] + prompt[None, None, :] +
           0.08 * rng.standard_normal((seeds, len(curve), P)))
    data[arm] = stats.ArmData(np.arange(len(curve)) * 10, np.tile(KL, (seeds, 1)), win)
    runs += [{"name": f"{arm}_s{k}", "arm": arm, "mode": mode, "group": "judge",
              "algorithm": "ipo", "data": "x", "points": [{"step": 10 * j} for j in
                                                          range(len(curve))]}
             for k in range(seeds)]
  return arms_lib.Context(runs, data, resamples=300, seed=1)


def _shift(d):
  return [0.5] + [v + d for v in OFFLINE[1:]]


def _judges(agreements: dict) -> list[dict]:
  """Judges of both series with the given held-out agreements ({judge: (series, value)})."""
  return [dict(judge=name, series=series, arm=f"online_{name}",
               agreement_value=value) for name, (series, value) in agreements.items()]


def _block(ctx, judges, monkeypatch, gate=PASSED):
  values = {j["judge"]: j["agreement_value"] for j in judges}
  monkeypatch.setattr(J, "agreement", lambda workdir, where: {
      "agreement": values[where[1]], "interval": [values[where[1]] - 0.02,
                                                  values[where[1]] + 0.02], "pairs": 1024,
      "measured": "test"})
  judges = [dict(j, agreement=("pm", j["judge"])) for j in judges]
  for j in judges:
    j.pop("agreement_value")
  compared = arms_lib.versus(ctx, [j["arm"] for j in judges], "offline_ipo", "offline_ipo")
  return J.axis(ctx, None, judges, compared, "offline_ipo", gate)


def test_the_crossover_is_interpolated_between_neighbouring_judges_of_each_series(
    monkeypatch, tmp_path):
  # Learned proxies: well below offline at 0.6, well above at 0.8: crosses at 0.7 (the
  # differences are -0.1 and +0.1, interpolated halfway). Noisy golden: always below.
  judges = _judges({"pm_quarter": (J.LEARNED, 0.6), "pm": (J.LEARNED, 0.7),
                    "pm_4x": (J.LEARNED, 0.8),
                    "golden_flip0.3": (J.NOISY, 0.7), "golden_flip0.1": (J.NOISY, 0.9)})
  ctx = _context({"online_pm_quarter": _shift(-0.1), "online_pm": _shift(-0.05),
                  "online_pm_4x": _shift(0.1), "online_golden_flip0.3": _shift(-0.12),
                  "online_golden_flip0.1": _shift(-0.06)})
  block = _block(ctx, judges, monkeypatch)
  learned = block["series"][J.LEARNED]["envelope"]
  assert learned["judges"] == ["pm_quarter", "pm", "pm_4x"]
  assert [c["between"] for c in learned["crossings"]] == [["pm", "pm_4x"]]
  est = {n: block["judges"][n]["envelope_minus_offline_ipo"]["estimate"]
         for n in ("pm", "pm_4x")}
  want = 0.7 + (0 - est["pm"]) * 0.1 / (est["pm_4x"] - est["pm"])
  assert learned["crossover"] == pytest.approx(want, abs=1e-3) and learned["bound"] is None
  assert 0.7 < learned["crossover"] < 0.8
  # The intervals: pm_quarter and pm read below, pm_4x above (Holm over all ten claims).
  assert {n: block["judges"][n]["reading"]["envelope"] for n in ("pm_quarter", "pm", "pm_4x")} \
      == {"pm_quarter": "below", "pm": "below", "pm_4x": "above"}
  assert learned["by_intervals"] == {"below_up_to": 0.7, "below_judge": "pm",
                                     "above_from": 0.8, "above_judge": "pm_4x"}
  assert "online overtakes offline at agreement" in learned["sentence"]
  assert "the crossover lies between them" in learned["sentence"]
  # Noisy golden: no crossing, so the bound.
  noisy = block["series"][J.NOISY]["envelope"]
  assert noisy["crossover"] is None and noisy["crossings"] == []
  assert noisy["bound"] == {"below_up_to": 0.9}
  assert "online stays below offline up to agreement 0.9" in noisy["sentence"]
  assert block["series"][J.NOISY]["peak"]["bound"] == {"below_up_to": 0.9}
  # Every judge's differences carry intervals around their estimates; the sentence both.
  for e in block["judges"].values():
    for what in ("peak", "envelope"):
      v = e[f"{what}_minus_offline_ipo"]
      assert v["interval"][0] <= v["estimate"] <= v["interval"][1]
  assert "learned proxy: online overtakes" in block["sentence"]
  assert "noisy golden: online stays below" in block["sentence"]
  assert "proxy PM, not this judge" in block["judges"]["golden_flip0.1"][
      "agreement_along_training_of"]
  lines = J.lines(block)
  assert any(line.startswith("| pm_4x | learned_proxy | 0.8 ") for line in lines)
  plots.plot_judge_axis(block, str(tmp_path / "judge_axis.png"))
  assert (tmp_path / "judge_axis.png").stat().st_size > 1000
  json.dumps(block)  # results.json takes it as it is


def test_crossover_rules_on_points():
  pts = lambda *xy: [{"judge": f"j{i}", "agreement": x, "estimate": y, "reading": rd}
                     for i, (x, y, rd) in enumerate(xy)]
  # Sorted by agreement before neighbours are taken; an exact 0 counts as not below.
  c = J.crossover(pts((0.8, 0.2, "above"), (0.6, -0.2, "below"), (0.7, 0.0, "no difference "
                                                                    "detected")))
  assert c["judges"] == ["j1", "j2", "j0"] and c["crossover"] == 0.7
  # Above everywhere: the bound from below; down then up: the upward crossing counts.
  c = J.crossover(pts((0.6, 0.1, "above"), (0.9, 0.3, "above")))
  assert c["crossover"] is None and c["bound"] == {"above_from": 0.6}
  assert c["by_intervals"]["above_from"] == 0.6 and c["by_intervals"]["below_up_to"] is None
  c = J.crossover(pts((0.6, 0.1, "n"), (0.7, -0.1, "n"), (0.8, 0.3, "n")))
  assert [x["direction"] for x in c["crossings"]] == ["down", "up"]
  assert c["crossover"] == pytest.approx(0.725) and c["bound"] is None
  assert "no judge of the series separates" in c["sentence"]
  c = J.crossover(pts((0.6, None, "n"), (None, 0.2, "n")))
  assert c["judges"] == [] and c["crossover"] is None and c["bound"] is None
  assert c["sentence"] == "no judge of this series has data"


def test_a_failed_gate_or_few_seeds_are_said(monkeypatch):
  judges = _judges({"pm": (J.LEARNED, 0.7), "pm_4x": (J.LEARNED, 0.8)})
  ctx = _context({"online_pm": _shift(-0.1), "online_pm_4x": _shift(0.1)})
  block = _block(ctx, judges, monkeypatch, gate={"gate_passed": False})
  assert block["sentence"].startswith("Inconclusive")
  ctx = _context({"online_pm": _shift(-0.1), "online_pm_4x": _shift(0.1)}, seeds=2)
  block = _block(ctx, _judges({"pm": (J.LEARNED, 0.7), "pm_4x": (J.LEARNED, 0.8)}),
                 monkeypatch)
  assert block["judges"]["pm"]["reading"]["envelope"].startswith("not read")
  assert block["series"][J.LEARNED]["envelope"]["crossover"] is not None  # estimate only
  assert "are not read: estimates only" in block["sentence"]


def test_the_stages_it_plans_at_the_full_scale(tmp_path):
  s = _study()
  assert "judge" in s.experiments and s.judge_axis.pm_sizes == ["t5-mini", "t5-midi"]
  stages = {st.name: st for st in Planner(s, str(tmp_path)).build()}
  order = list(stages)
  seeds = [0, 1, 2]
  # The noisy golden judges: their exact held-out agreement (rate 0: the attribution's
  # online_ipo_golden, the series' golden end) and online IPO against each.
  for r in (0.0, 0.1, 0.2, 0.3):
    st = stages[f"noisy_golden_flip{r:g}"]
    assert st.kind == "pairs" and st.deps == ("pairs",) and st.params["flip_rate"] == r
  for r in (0.1, 0.2, 0.3):
    for k in seeds:
      st = stages[f"online_ipo_golden_flip{r:g}_s{k}"]
      assert st.group == "judge" and st.arm == f"online_ipo_golden_flip{r:g}"
      assert st.config.judge.kind == "golden" and st.config.judge.flip_rate == r
      assert st.config.judge.flip_seed == s.seed and st.run["hparams"]["judge_flip"] == r
      assert "pm_quarter" not in st.deps
  # The learned proxies: quarter and 4x pair sets, their PMs, PMs of larger sizes.
  assert stages["pairs_quarter"].deps == ("pairs",)
  assert stages["pairs_quarter"].params["num"] == s.num_pairs // 4
  assert stages["pairs_4x"].params["num"] == 4 * s.num_pairs
  assert stages["pairs_4x"].params["seed"] != stages["pairs"].params["seed"]
  # (a larger PM's rate scaled by width from the t5-tiny policy's d_model 64: size_lr)
  for pm, data, model, backbone, width in (
      ("pm_quarter", "pairs_quarter", "t5-tiny", "sft", 64),
      ("pm_4x", "pairs_4x", "t5-tiny", "sft", 64),
      ("pm_t5-mini", "pairs", "t5-mini", "sft_t5-mini", 128),
      ("pm_t5-midi", "pairs", "t5-midi", "sft_t5-midi", 256)):
    c = stages[pm].config
    assert stages[pm].kind == "pm" and c.model.name == model
    assert c.data.replay_dir == os.path.join(str(tmp_path), data, "train")
    assert c.init.backbone == os.path.join(str(tmp_path), backbone, "export")
    assert c.eval.pairs_dir == os.path.join(str(tmp_path), "pairs", "held_out")
    assert c.train.num_steps == s.pm.steps
    assert c.optimizer.learning_rate == pytest.approx(s.pm.learning_rate * 64 / width)
    assert backbone in stages[pm].deps and "pairs" in stages[pm].deps
    for k in seeds:
      st = stages[f"online_ipo_{pm}_s{k}"]
      assert st.config.judge.kind == "proxy" and pm in st.deps
      assert st.config.judge.checkpoint == os.path.join(str(tmp_path), pm, "export")
      assert "flip_rate" not in st.config.judge  # at its default: the old config
      assert order.index(pm) < order.index(st.name)
  # Same model, steps, rate and beta as Fig. 1's online IPO.
  fig1, mine = stages["online_ipo_s0"].config, stages["online_ipo_pm_4x_s0"].config
  for key in ("model.name", "train.num_steps", "optimizer.learning_rate", "loss.beta",
              "loss.name", "sampling.temperature", "eval.steps"):
    a, b = fig1, mine
    for part in key.split("."):
      a, b = a[part], b[part]
    assert a == b, key
  # H5 plans sft_t5-mini (reused here); t5-midi's SFT is the experiment's own.
  assert stages["sft_t5-mini"].deps == () and stages["sft_t5-midi"].config.model.name == \
      "t5-midi"
  assert order.index("sft_t5-mini") < order.index("pm_t5-mini")
  # The study's pm is not retrained: its run is Fig. 1's online IPO.
  assert "online_ipo_pm_s0" not in stages and "pm_pm" not in stages
  new = [n for n, st in stages.items() if st.group == "judge"] + ["sft_t5-midi"]
  assert len(new) == 4 + 9 + 2 + 4 + 12 + 1


def test_its_config_is_checked(tmp_path):
  for over, match in (({"judge_axis.flip_rates": [0.5]}, "flip_rates"),
                      ({"judge_axis.flip_rates": [0.0]}, "attribution's online_ipo_golden"),
                      ({"judge_axis.pm_sizes": ["t5-tiny"]}, "pm_sizes"),
                      ({"judge_axis.pm_sizes": ["t5-huge"]}, "pm_sizes")):
    with pytest.raises(config_lib.ConfigError, match=match):
      Planner(_study(**over), str(tmp_path)).build()
  c = _study("smoke", experiments=["judge"])
  with pytest.raises(config_lib.ConfigError, match="list 'fig1' too"):
    Planner(c, str(tmp_path)).build()
  # Smoke can list it: one noisy judge, no larger PMs, no golden point without the
  # attribution.
  stages = Planner(_study("smoke", experiments=["fig1", "judge"]), str(tmp_path)).build()
  names = [st.name for st in stages if st.group == "judge"]
  assert names == ["noisy_golden_flip0.2", "online_ipo_golden_flip0.2_s0", "pairs_quarter",
                   "pairs_4x", "pm_quarter", "pm_4x", "online_ipo_pm_quarter_s0",
                   "online_ipo_pm_4x_s0"]


# The judge axis at smoke scale runs in tests/study/test_study.py, on the smoke study's
# finished stages (test_the_judge_axis_runs_at_smoke_scale).
