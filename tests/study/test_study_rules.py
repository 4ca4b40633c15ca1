"""The study's rules on synthetic curves: for each finding a set of curves where it
holds and one where it fails; the set-up gate; stage-hash propagation.

Curves are per-prompt golden win rates around a known mean curve (a prompt
effect shared by every run, as the same eval prompts are, plus per-run noise),
so the verdicts below are what the intervals must give, not what a run happened
to give.
"""
import json
import os

import numpy as np
import pytest

from alignment import config as config_lib
from alignment import stats, study
from alignment.study import arms as arms_lib
from alignment.study import foundation
from alignment.study import stages as stages_lib
from alignment.study.experiments import attribution, fig1, h1, h2, h4, pair_sets, staleness

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
P, Q = 300, 200  # prompts, classifier pairs
PASSED = {"gate_passed": True}


class Arms:
  """Builds runs and ArmData for a synthetic study (three seeds per arm unless told)."""

  def __init__(self, seed=0):
    self.rng = np.random.default_rng(seed)
    self.prompt_effect = 0.15 * self.rng.standard_normal(P)
    self.runs, self.data = [], {}

  def add(self, arm, mode, curve, kl, group="fig1", algorithm="ipo", seeds=3, classifier=0.6,
          chosen=-1.0, offset=0.0, score=None):
    """offset: the standard deviation of each run's own shift of its whole curve; score:
    a mean golden-score curve (per-prompt noise added), else none recorded."""
    curve, kl = np.asarray(curve, float), np.asarray(kl, float)
    j = len(curve)
    win = (curve[None, :, None] + self.prompt_effect[None, None, :] +
           offset * self.rng.standard_normal((seeds, 1, 1)) +
           0.08 * self.rng.standard_normal((seeds, j, P)))
    cls = self.rng.random((seeds, j, Q)) < np.broadcast_to(np.asarray(classifier, float), (j,))[
        None, :, None]
    ch = np.broadcast_to(np.asarray(chosen, float), (j,))[None, :, None] + 0.5 * \
        self.rng.standard_normal((seeds, j, Q))
    sc = None if score is None else (np.asarray(score, float)[None, :, None] +
                                     0.3 * self.rng.standard_normal((seeds, j, P)))
    self.data[arm] = stats.ArmData(np.arange(j) * 10, np.tile(kl, (seeds, 1)), win,
                                   classifier=cls.astype(float), chosen=ch, score=sc)
    for k in range(seeds):
      self.runs.append({"name": f"{arm}_s{k}", "arm": arm, "mode": mode, "group": group,
                        "algorithm": algorithm, "data": "x", "points": [{}]})
    return self

  def context(self, workdir=""):
    return arms_lib.Context(self.runs, self.data, resamples=400, seed=1, workdir=workdir)


KL = [0.0, 1.0, 2.0, 4.0]
AHEAD, BEHIND = [0.5, 0.62, 0.72, 0.6], [0.5, 0.55, 0.58, 0.52]  # online ahead of offline


def _fig1(online, offline):
  return Arms().add("online_ipo", "online", online, KL).add("offline_ipo", "offline", offline,
                                                            [0.0, 1.5, 3.0, 6.0])


def test_finding_1_holds_and_fails():
  f = fig1.finding_1(_fig1(AHEAD, BEHIND).context(), PASSED)
  assert f["verdict"] == "reproduced", f["parts"]
  f = fig1.finding_1(_fig1(BEHIND, AHEAD).context(), PASSED)
  assert f["verdict"] == "not reproduced", f["parts"]
  # Online better but never falling: the over-optimisation claim is contradicted... or unclear
  f = fig1.finding_1(_fig1([0.5, 0.62, 0.70, 0.72], BEHIND).context(), PASSED)
  assert f["verdict"] in ("not reproduced", "inconclusive")
  assert f["parts"][2]["verdict"] != "supported"


def test_a_failed_gate_makes_every_finding_inconclusive():
  f = fig1.finding_1(_fig1(AHEAD, BEHIND).context(), {"gate_passed": False})
  assert f["verdict"] == "inconclusive" and "cannot rank" in f["reason"]
  assert all(p["verdict"] == "supported" for p in f["parts"])  # the parts are still shown


def _h1(shuffled, online=AHEAD, offline=BEHIND):
  a = _fig1(online, offline)
  a.add("replay_shuffled", "offline", shuffled, KL, group="h1")
  a.add("replay_window4", "offline", [0.5, 0.6, 0.65, 0.6], KL, group="h1")
  return a.context()


def test_finding_2_holds_and_fails(tmp_path):
  f = h1.finding_2(_h1([0.5, 0.54, 0.6, 0.55]), PASSED, "online_ipo", str(tmp_path),
                   "online_ipo_s0")
  assert f["verdict"] == "reproduced", f["parts"]
  assert set(f["numbers"]["window_peaks"]) == {"4"}
  f = h1.finding_2(_h1([0.5, 0.62, 0.76, 0.7]), PASSED, "online_ipo", str(tmp_path),
                   "online_ipo_s0")
  assert f["verdict"] == "not reproduced", f["parts"]


def test_claims_that_explain_an_online_advantage_are_not_applicable_without_one(tmp_path):
  """Offline ahead in Fig. 1: H1's claims presuppose the advantage they would explain,
  so they are reported "not applicable", never voted, whatever the replay did."""
  for shuffled in ([0.5, 0.54, 0.6, 0.55], [0.5, 0.62, 0.76, 0.7]):
    ctx = _h1(shuffled, online=BEHIND, offline=AHEAD)
    assert fig1.online_advantage(ctx, PASSED) is False
    f = h1.finding_2(ctx, PASSED, "online_ipo", str(tmp_path), "online_ipo_s0")
    assert f["verdict"] == "not applicable" and "no online advantage" in f["reason"]
    assert {p["status"] for p in f["parts"]} == {"not applicable"}
    assert all("holm_verdict" not in p for p in f["parts"])
  assert fig1.online_advantage(_h1([0.5, 0.54, 0.6, 0.55]), PASSED) is True


def _h2(peak_pairs, online=AHEAD):
  a = _fig1(online, BEHIND)
  a.add("offline_peak_pairs", "offline", peak_pairs, KL, group="h2")
  a.add("offline_final_pairs", "offline", [0.5, 0.51, 0.5, 0.49], KL, group="h2")
  return a.context()


def test_finding_3_holds_and_fails():
  f = h2.finding_3(_h2([0.5, 0.51, 0.52, 0.5]), PASSED, "online_ipo")
  assert f["verdict"] == "reproduced", f["parts"]
  assert f["parts"][1]["counts"] is False  # the final-policy row is shown, not voted
  assert f["parts"][1]["status"] == "shown"
  f = h2.finding_3(_h2([0.5, 0.65, 0.72, 0.7]), PASSED, "online_ipo")
  assert f["verdict"] == "not reproduced", f["parts"]


def _h3(online_cls, offline_cls, bo2_chosen=2.0):
  a = Arms()
  a.add("online_ipo", "online", AHEAD, KL, classifier=[0.5, online_cls, online_cls, online_cls],
        chosen=[0.0, -0.5, -1.0, -1.0])
  a.add("offline_ipo", "offline", BEHIND, KL,
        classifier=[0.5, offline_cls, offline_cls, offline_cls], chosen=[0.0, -1, -2.0, -3.0])
  a.add("online_best_of_2", "online", [0.5, 0.6, 0.6, 0.6], KL, group="h4",
        algorithm="best_of_2", chosen=bo2_chosen)
  return a.context()


def test_finding_4_holds_and_fails():
  f = fig1.finding_4(_h3(0.45, 0.7), PASSED)
  assert f["verdict"] == "reproduced", f["parts"]  # Best-of-2's rising log-probs ignored
  f = fig1.finding_4(_h3(0.75, 0.5), PASSED)
  assert f["verdict"] == "not reproduced", f["parts"]


def test_no_claim_is_counted_in_two_findings():
  """Finding 4 shows finding 1's peak claim beside its own, never votes it."""
  ctx = _h3(0.45, 0.7)
  f1, f4 = fig1.finding_1(ctx, PASSED), fig1.finding_4(ctx, PASSED)
  peak = [p for p in f4["parts"] if "peak" in p["claim"]]
  assert len(peak) == 1 and peak[0]["status"] == "shown" and "finding 1" in peak[0]["claim"]
  assert peak[0]["estimate"] == f1["parts"][0]["estimate"]
  voted = lambda f: {p["claim"] for p in f["parts"] if p["status"] == "voted"}
  assert voted(f1) and voted(f4) and not voted(f1) & voted(f4)


def _h4(offline):
  a = _fig1(AHEAD, BEHIND)
  a.add("online_best_of_2", "online", [0.5, 0.6, 0.66, 0.6], KL, group="h4",
        algorithm="best_of_2")
  a.add("offline_best_of_2", "offline", offline, KL, group="h4", algorithm="best_of_2")
  a.add("offline_best_of_2_replay", "offline", [0.5, 0.6, 0.65, 0.6], KL, group="h4",
        algorithm="best_of_2")
  return a.context()


def test_finding_5_holds_and_fails():
  assert h4.finding_5(_h4([0.5, 0.52, 0.55, 0.53]), PASSED)["verdict"] == "reproduced"
  assert h4.finding_5(_h4([0.5, 0.7, 0.75, 0.7]), PASSED)["verdict"] == "not reproduced"


def _sec6(gap):
  a = _fig1(AHEAD, [0.5, 0.6, 0.66, 0.6])
  a.add("offline_writer_pairs", "offline", [0.5, 0.53, 0.55, 0.5], KL, group="sec6")
  a.add("offline_gap_pairs", "offline", gap, KL, group="sec6")
  a.add("offline_mixed_pairs", "offline", [0.5, 0.58, 0.63, 0.6], KL, group="sec6")
  return a.context()


def test_finding_7_holds_and_fails():
  assert pair_sets.finding_7(_sec6([0.5, 0.53, 0.55, 0.51]), PASSED, "sft")["verdict"] == \
      "reproduced"
  assert pair_sets.finding_7(_sec6([0.5, 0.64, 0.7, 0.66]), PASSED, "sft")["verdict"] == \
      "not reproduced"


def test_arms_with_fewer_than_three_seeds_are_shown_and_never_voted():
  a = Arms().add("online_ipo", "online", AHEAD, KL, seeds=2).add(
      "offline_ipo", "offline", BEHIND, KL, seeds=2)
  f = fig1.finding_1(a.context(), PASSED)
  assert all(p["status"] == "few seeds" for p in f["parts"]), f["parts"]
  assert f["verdict"] == "inconclusive" and "fewer than 3 seeds" in f["reason"]
  assert f["parts"][0]["estimate"] > 0.1  # shown with its number
  assert "2 (not voted)" in "\n".join(arms_lib.arm_table(a.context(), ["online_ipo"]))


def test_holm_corrects_a_findings_claims_for_their_number():
  """Two claims at p = 0.03 each: each alone is below 0.05, the pair is not (Holm: the
  smaller against 0.025); a claim at p = 0.001 survives. The finding votes the
  corrected verdicts."""
  claim = lambda p, est=0.1: {"claim": "x", "estimate": est, "interval": [0.01, 0.2],
                              "verdict": "supported", "p": p, "min_seeds": 3, "counts": True}
  assert arms_lib.holm_verdicts([claim(0.03), claim(0.03)]) == ["unclear", "unclear"]
  assert arms_lib.holm_verdicts([claim(0.001), claim(0.03)]) == ["supported", "supported"]
  assert arms_lib.holm_verdicts([claim(0.001, -0.1), claim(0.2)]) == ["contradicted", "unclear"]
  f = arms_lib.finding(9, "x", [claim(0.03), claim(0.03)], {}, PASSED, "rule")
  assert f["verdict"] == "inconclusive"
  assert [p["verdict"] for p in f["parts"]] == ["supported"] * 2  # uncorrected, shown
  assert [p["holm_verdict"] for p in f["parts"]] == ["unclear"] * 2
  assert arms_lib.finding(9, "x", [claim(0.01), claim(0.03)], {}, PASSED, "r")["verdict"] == \
      "reproduced"


def _attribution(on_proxy, on_golden, off_proxy, off_golden):
  """The 2 x 2 with every arm at the same KL per point: only the win rates differ."""
  a = Arms().add("online_ipo", "online", on_proxy, KL).add("offline_ipo", "offline",
                                                           off_golden, KL)
  a.add("online_ipo_golden", "online", on_golden, KL, group="attribution")
  a.add("offline_ipo_proxy_labels", "offline", off_proxy, KL, group="attribution")
  ctx = a.context()
  return attribution.effects(ctx, attribution.cells(ctx))


LOW, HIGH = [0.5, 0.55, 0.58, 0.56], [0.5, 0.65, 0.72, 0.7]


def test_the_attribution_says_which_effect_explains_the_gap():
  # Offline ahead; the label source alone moves the curves: labels explain it.
  eff = _attribution(LOW, HIGH, LOW, HIGH)
  e = eff["envelope"]
  assert e["fig1_gap"]["verdict"] == "contradicted"
  assert e["labels_online"]["verdict"] == e["labels_offline"]["verdict"] == "supported"
  assert e["sampling_at_proxy_labels"]["verdict"] == "unclear"
  text = attribution.sentence(eff, PASSED)
  assert "offline IPO ahead" in text and "explained by the label source" in text, text
  assert "no effect of on-policy sampling" in text
  # Online ahead, and only sampling moves the curves: sampling explains it.
  text = attribution.sentence(_attribution(HIGH, HIGH, LOW, LOW), PASSED)
  assert "online IPO ahead" in text and "explained by on-policy sampling:" in text, text
  # Offline ahead because on-policy sampling hurts, not the labels.
  text = attribution.sentence(_attribution(LOW, LOW, HIGH, HIGH), PASSED)
  assert "explained by on-policy sampling" in text and "hurts" in text, text
  # No gap in Fig. 1: nothing to explain, the effects are still said.
  text = attribution.sentence(_attribution(LOW, HIGH, HIGH, LOW), PASSED)
  assert text.startswith("Fig. 1 shows no gap"), text
  assert "inconclusive" in attribution.sentence(eff, {"gate_passed": False}).lower()
  # Interaction: sampling helps with golden labels only (on_golden high).
  e = _attribution(LOW, HIGH, LOW, LOW)["envelope"]
  assert e["interaction"]["estimate"] > 0.05 and e["interaction"]["verdict"] == "supported"


# ---------------------------------------------------------------------------
# The gate
# ---------------------------------------------------------------------------


def _pm_metrics(workdir, accuracy, pairs):
  os.makedirs(workdir / "pm", exist_ok=True)
  (workdir / "pm" / "metrics.jsonl").write_text(json.dumps(
      {"step": 1000, "eval/accuracy": accuracy, "eval/pairs": pairs}) + "\n")


@pytest.mark.parametrize("accuracy,pairs,passed", [(0.72, 1024, True), (0.55, 1024, True),
                                                   (0.52, 1024, False), (0.56, 100, False),
                                                   (0.40, 1024, False)])
def test_the_gate_passes_only_when_the_interval_is_above_one_half(tmp_path, accuracy, pairs,
                                                                  passed):
  _pm_metrics(tmp_path, accuracy, pairs)
  gate = foundation.gate(str(tmp_path), [], [])
  lo, hi = gate["proxy_agreement_interval"]
  assert lo < accuracy < hi
  assert gate["gate_passed"] is passed
  assert (lo > 0.5) is passed


def test_no_pm_evaluation_means_no_gate(tmp_path):
  assert foundation.gate(str(tmp_path), [], [])["gate_passed"] is False


# ---------------------------------------------------------------------------
# Stage hashes: a change upstream invalidates everything downstream
# ---------------------------------------------------------------------------


def _hashes(tmp_path, *overrides):
  c = config_lib.load(os.path.join(ROOT, "configs", "study.py:smoke"))
  config_lib.apply_overrides(c, list(overrides))
  stages = study.plan(c, str(tmp_path))
  return stages, study.stage_hashes(stages, str(tmp_path))


def _downstream(stages, roots):
  out = set(roots)
  for st in stages:
    if set(st.deps) & out:
      out.add(st.name)
  return out


def test_stage_hashes_propagate_downstream(tmp_path):
  stages, base = _hashes(tmp_path)
  _, sft = _hashes(tmp_path, "sft.steps=21")
  changed = {k for k in base if base[k] != sft[k]}
  assert changed == _downstream(stages, {"sft"}) == set(base)  # everything rests on SFT
  _, online = _hashes(tmp_path, "online.steps=9")
  changed = {k for k in base if base[k] != online[k]}
  assert {"replay_ordered", "replay_shuffled_s0", "peak_pairs", "final_pairs",
          "offline_peak_pairs_s0"} <= changed
  assert not changed & {"sft", "pairs", "pm", "sft_eval", "offline_ipo_s0", "writer_pairs",
                        "proxy_labels", "offline_ipo_proxy_labels_s1"}
  assert changed == _downstream(stages, {k for k in base if k.startswith("online_")}) | {
      "replay_ordered", "replay_window2_s0", "replay_shuffled_s0",
      "offline_best_of_2_replay_s0"}
  _, again = _hashes(tmp_path)
  assert again == base  # deterministic


def test_stage_hashes_do_not_depend_on_where_the_study_lies(tmp_path):
  """A study copied or moved elsewhere keeps its finished stages: paths inside
  its workdir (an upstream export, a pair set) count relative to it."""
  stages, here = _hashes(tmp_path / "a")
  _, there = _hashes(tmp_path / "elsewhere" / "b")
  assert there == here
  pm = {st.name: st for st in stages}["pm"]  # the PM starts from the SFT stage's export
  assert str(tmp_path / "a") in pm.config.to_json_best_effort()
  # Without the workdir, the path itself is hashed: the copies differ.
  assert study.stage_hashes(stages)["pm"] != study.stage_hashes(
      study.plan(config_lib.load(os.path.join(ROOT, "configs", "study.py:smoke")),
                 str(tmp_path / "elsewhere" / "b")))["pm"]


def _tree(root, files_):
  for rel, text in files_.items():
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_text(text)


def test_the_code_digest_covers_what_stages_run_and_not_the_report(tmp_path, monkeypatch):
  """A fixed loss or config reruns the study; an edited report, tool or gin file does not."""
  covered = {"alignment/losses.py": "IPO = 1\n", "alignment/study/foundation.py": "A = 1\n",
             "alignment/data/assets/env.model": "vocab", "configs/online.py": "STEPS = 1\n"}
  excluded = {"alignment/study/report.py": "R = 1\n", "alignment/study/plots.py": "P = 1\n",
              "alignment/study/runner.py": "X = 1\n", "alignment/bench/train.py": "B = 1\n",
              "alignment/aot.py": "C = 1\n", "alignment/zoo.py": "Z = 1\n",
              "alignment/models/export.py": "E = 1\n", "alignment/flops.py": "F = 1\n",
              "configs/gin/x.gin": "a.b = 1\n",
              "alignment/__pycache__/losses.cpython-311.pyc": "bytecode",
              "alignment/notes.txt": "not code"}
  setup = 'setuptools.setup(name="alignment", version="0.1.0", install_requires=[])\n'
  _tree(tmp_path, {**covered, **excluded, "setup.py": setup})
  base = stages_lib.code_digest(str(tmp_path))
  assert stages_lib.code_digest(tmp_path) == base and len(base) == 64  # deterministic
  for rel in excluded:
    (tmp_path / rel).write_text("edited\n")
    assert stages_lib.code_digest(str(tmp_path)) == base, rel
  (tmp_path / "setup.py").write_text(setup.replace("[]", "['numpy']"))  # of setup.py,
  assert stages_lib.code_digest(str(tmp_path)) == base  # only the version counts
  for rel, text in {**covered, "setup.py": setup.replace("0.1.0", "0.2.0"),
                    "alignment/pairsets.py": "\n"}.items():  # a new module counts too
    (tmp_path / rel).write_text(text + "#\n" * (rel in covered))
    now = stages_lib.code_digest(str(tmp_path))
    assert now != base, rel
    base = now
  with pytest.raises(ValueError, match="not a directory holding the alignment/ package"):
    stages_lib.code_digest(str(tmp_path / "nowhere"))
  # The digest is in every stage's hash, so a code change reaches every stage.
  stages = [study.Stage("a", "pairs", params={"n": 1}),
            study.Stage("b", "pairs", deps=("a",), params={"n": 1})]
  before = study.stage_hashes(stages)
  monkeypatch.setattr(stages_lib, "code_digest", lambda root=None: "f" * 64)
  after = study.stage_hashes(stages)
  assert all(before[k] != after[k] for k in before)


def test_no_stage_runs_a_module_the_code_digest_leaves_out():
  """The excluded modules (report, tools) are reached by no stage's code: not by
  alignment.main's runners, nor the planner, the pair sets or the experiments whose
  `generate` functions the pairs stages run."""
  import test_imports  # pylint: disable=g-import-not-at-top  (tests/ is on the path)
  from alignment import main as main_lib  # pylint: disable=g-import-not-at-top

  graph = test_imports.import_graph()
  seen, todo = set(), ["alignment.main", "alignment.study.plan", "alignment.study.stages",
                       "alignment.pairsets", *main_lib.RUNNERS.values()]
  while todo:
    module = todo.pop()
    if module not in seen:
      seen.add(module)
      todo.extend(graph.get(module, ()))
  assert {"alignment.study.foundation", "alignment.study.experiments.h2",
          "alignment.study.arms", "alignment.train.online"} <= seen  # arms: h2's peak step
  for rel in stages_lib.CODE_EXCLUDED:
    assert os.path.exists(os.path.join(ROOT, rel)), rel  # the list names what exists
    module = rel.removesuffix(".py").rstrip("/").replace("/", ".")
    assert not {m for m in seen if m == module or m.startswith(module + ".")}, rel


def test_a_rerun_stage_says_whether_its_config_upstream_or_the_code_changed(
    tmp_path, monkeypatch, capsys):
  made = []

  def stage(name, n, deps=()):
    return study.Stage(name, "pairs", deps=deps, params={"n": n},
                       generate=lambda d: made.append(name) or {"n": n})

  def run(a, b):
    """The runner's loop over two pair sets, b built from a; what it printed."""
    stages = [stage("a", a), stage("b", b, deps=("a",))]
    hashes = study.stage_hashes(stages, str(tmp_path))
    for st in stages:
      if not study.stage_done(str(tmp_path), st, hashes[st.name]):
        study.run_stage(str(tmp_path), st, hashes[st.name])
    return capsys.readouterr().out.splitlines()

  monkeypatch.setattr(stages_lib, "code_digest", lambda root=None: "a" * 64)
  assert run(1, 1) == [] and made == ["a", "b"]
  info = stages_lib.read_marker(str(tmp_path), "b")
  assert info["code"] == "a" * 64 and info["version"] == stages_lib.package_version()
  assert info["dep_hashes"] == {"a": stages_lib.read_marker(str(tmp_path), "a")["config_hash"]}
  assert run(1, 1) == [] and made == ["a", "b"]  # nothing changed: both cached
  assert run(1, 2) == ["[study] stage b: running it again: its own config changed"]
  assert run(2, 2) == ["[study] stage a: running it again: its own config changed",
                       "[study] stage b: running it again: upstream stage a changed"]
  monkeypatch.setattr(stages_lib, "code_digest", lambda root=None: "b" * 64)
  assert run(2, 2) == [
      f"[study] stage {s}: running it again: the code changed (digest aaaaaaaa -> bbbbbbbb)"
      for s in "ab"]
  assert made == ["a", "b", "b", "a", "b", "a", "b"]
  # A STAGE.json written before stages recorded their code: the study reruns once.
  marker = tmp_path / "b" / "STAGE.json"
  old = json.loads(marker.read_text())
  for key in ("code", "own_hash", "dep_hashes", "version"):
    del old[key]
  marker.write_text(json.dumps({**old, "config_hash": "0" * 16}))
  assert run(2, 2) == ["[study] stage b: running it again: the code changed (its STAGE.json "
                       "records no code digest; now bbbbbbbb)"]
  assert stages_lib.read_marker(str(tmp_path), "b")["code"] == "b" * 64


def test_log_steps():
  assert study.log_steps(200, 7, 5) == [5, 9, 17, 32, 58, 108, 200]
  assert study.log_steps(8, 3, 2) == [2, 4, 8]
  assert study.log_steps(3, 7, 5) == [3]


def test_h5_measures_every_size_against_one_reference_and_proxy(tmp_path):
  c = config_lib.load(os.path.join(ROOT, "configs", "study.py:full"))
  stages = {st.name: st for st in study.plan(c, str(tmp_path))}
  main_sft, pm = str(tmp_path / "sft" / "export"), str(tmp_path / "pm" / "export")
  for size in ("t5-nano", "t5-mini"):
    for name in (f"online_ipo_{size}_s0", f"offline_ipo_{size}_s2", f"sft_eval_{size}"):
      e = stages[name].config.eval
      assert e.reference == main_sft and e.proxy == pm, name  # one reference, one proxy
      assert e.sft == str(tmp_path / f"sft_{size}" / "export"), name  # KL against its own SFT
      assert stages[name].config.model.name == size
    assert stages[f"online_ipo_{size}_s1"].config.judge.checkpoint == pm
    assert stages[f"offline_ipo_{size}_s1"].config.data.replay_dir == str(tmp_path / "pairs" /
                                                                          "train")
    assert stages[f"online_ipo_{size}_s0"].sft_eval == f"sft_eval_{size}"
    assert stages[f"online_ipo_{size}_s2"].arm == f"online_ipo_{size}"
  assert not [n for n in stages if n.startswith("online_ipo_t5-tiny")]  # Fig. 1's arm


def test_experiments_without_fig1_are_the_foundation_and_h1_needs_fig1(tmp_path):
  c = config_lib.load(os.path.join(ROOT, "configs", "study.py:smoke"))
  config_lib.apply_overrides(c, ["experiments=[]"])
  assert [st.name for st in study.plan(c, str(tmp_path))] == ["sft", "pairs", "pm", "sft_eval"]
  config_lib.apply_overrides(c, ["experiments=['h1']"])
  with pytest.raises(config_lib.ConfigError, match="list 'fig1' too"):
    study.plan(c, str(tmp_path))


def test_a_stage_stopped_by_sigterm_is_not_marked_done(tmp_path, monkeypatch):
  """A preempted stage's loop returns normally; the study must stop, not record it."""
  import signal  # pylint: disable=g-import-not-at-top
  from alignment import main as main_lib  # pylint: disable=g-import-not-at-top
  from alignment.train import bookkeeping  # pylint: disable=g-import-not-at-top

  def preempted_run(config, workdir):
    del config, workdir
    notice = bookkeeping.Preemption()
    os.kill(os.getpid(), signal.SIGTERM)  # the loop's handler takes it; the loop returns
    notice.close()
    return {}

  monkeypatch.setattr(bookkeeping, "_PREEMPTED", [False])
  monkeypatch.setattr(main_lib, "run", preempted_run)
  stage = study.Stage("online_ipo_s0", "online", config=config_lib.load(
      os.path.join(ROOT, "configs", "online.py:tiny")))
  with pytest.raises(study.Preempted, match="SIGTERM in stage online_ipo_s0"):
    study.run_stage(str(tmp_path), stage, "hash")
  assert not os.path.exists(tmp_path / "online_ipo_s0" / "STAGE.json")


def test_arms_are_listed_with_their_numbers_as_numbers():
  names = ["online_ipo_stale16", "online_ipo_stale4", "online_ipo", "online_ipo_stale64",
           "online_ipo_stale1"]
  assert arms_lib.arm_order(names) == ["online_ipo", "online_ipo_stale1", "online_ipo_stale4",
                                       "online_ipo_stale16", "online_ipo_stale64"]


def test_comparisons_read_above_below_and_no_difference_from_their_intervals():
  """An arm well above online IPO, one well below and one on top of it: the reading
  of each comparison (results.json and the report's sentence, as the staleness
  experiment's section gives them) follows its interval; a failed gate makes the
  sentence inconclusive."""
  online = [0.5, 0.6, 0.65, 0.6]
  a = _fig1(online, [0.5, 0.55, 0.58, 0.52])
  a.add("online_ipo_stale1", "online", online, KL, group="staleness")
  a.add("online_ipo_stale4", "online", [0.5, 0.7, 0.78, 0.75], KL, group="staleness")
  a.add("online_ipo_stale64", "online", [0.5, 0.52, 0.54, 0.5], KL, group="staleness")
  a.add("online_ipo_stale128", "online", [0.5, 0.52, 0.54, 0.5], KL, group="staleness",
        seeds=1)
  ctx = a.context()
  smoke = config_lib.load(os.path.join(ROOT, "configs", "study.py:smoke"))
  section = staleness.EXPERIMENT.section(ctx, PASSED, smoke)
  c = section.results["comparisons"]["staleness"]
  assert c == fig1.against_online_ipo(ctx, ctx.group_arms("staleness"))
  assert list(c) == ["online_ipo_stale1", "online_ipo_stale4", "online_ipo_stale64",
                     "online_ipo_stale128"]
  assert c["online_ipo_stale128"]["reading"] == {"peak": arms_lib.FEW_SEEDS,
                                                 "envelope": arms_lib.FEW_SEEDS}
  c = {k: v for k, v in c.items() if k != "online_ipo_stale128"}
  assert c["online_ipo_stale4"]["reading"] == {"peak": "above", "envelope": "above"}
  assert c["online_ipo_stale64"]["reading"] == {"peak": "below", "envelope": "below"}
  assert c["online_ipo_stale1"]["reading"]["peak"] == "no difference detected"
  text = section.results["comparison_readings"]["staleness"]
  assert ("peak: above online_ipo_stale4; below online_ipo_stale64; no difference detected "
          "for online_ipo_stale1; not read (fewer than 3 seeds) for online_ipo_stale128.") \
      in text, text
  assert "Offline IPO on the SFT pairs (the k = infinity end) - online IPO: peak -" in text
  assert text.endswith("(below).") and "\n" not in text
  assert text in section.lines  # the report says it under its differences
  assert section.plot_arms == ["online_ipo", "online_ipo_stale1", "online_ipo_stale4",
                               "online_ipo_stale64", "online_ipo_stale128", "offline_ipo"]
  failed = staleness.EXPERIMENT.section(ctx, {"gate_passed": False}, smoke)
  assert "inconclusive" in failed.results["comparison_readings"]["staleness"]
  assert arms_lib.side({"estimate": None}) == "n/a"


def test_both_modes_run_the_same_learning_rate_by_beta_grid_with_the_main_arms_first(tmp_path):
  c = config_lib.load(os.path.join(ROOT, "configs", "study.py:smoke"))
  config_lib.apply_overrides(c, ["experiments=['fig1','h1']", "learning_rates=[1e-4,3e-4]",
                                 "betas=[0.1,0.5]", "online.learning_rate=3e-4",
                                 "offline.learning_rate=1e-4"])
  stages = {st.name: st for st in study.plan(c, str(tmp_path))}
  for mode, own in (("online", 3e-4), ("offline", 1e-4)):
    arms = [a for _, _, a in fig1.grid(c, mode)]
    assert arms[0] == f"{mode}_ipo"
    assert sorted(arms) == sorted([f"{mode}_ipo"] + [
        f"{mode}_ipo_lr{lr:g}_b{b:g}" for lr in (1e-4, 3e-4) for b in (0.1, 0.5)
        if (lr, b) != (own, 0.1)])
    for lr, b, arm in fig1.grid(c, mode):
      for k in c.seeds:
        cfg = stages[f"{arm}_s{k}"].config
        assert cfg.optimizer.learning_rate == lr and cfg.loss.beta == b, arm
        assert stages[f"{arm}_s{k}"].arm == arm
  # H1 replays the main online arm; only its first seed keeps its policies.
  assert "online_ipo_s0" in stages["replay_ordered"].deps
  assert [n for n, st in stages.items() if st.group == "fig1" and st.kind == "online"
          and st.config.eval.save_params] == ["online_ipo_s0"]


@pytest.mark.parametrize("overrides, message", [
    (["learning_rates=[1e-4,1e-3]"], r"study.online.learning_rate=0.0003 must be one of"),
    (["learning_rates=[3e-4,3e-4]"], "positive and distinct"),
    (["learning_rates=[3e-4]", "offline.learning_rate=1e-3"],
     r"study.offline.learning_rate=0.001 must be one of"),
])
def test_a_grid_without_the_main_arms_is_refused(tmp_path, overrides, message):
  c = config_lib.load(os.path.join(ROOT, "configs", "study.py:smoke"))
  config_lib.apply_overrides(c, overrides)
  with pytest.raises(config_lib.ConfigError, match=message):
    study.plan(c, str(tmp_path))


def test_a_redrawn_foundation_plans_its_own_sft_pairs_pm_and_the_listed_experiments(tmp_path):
  c = config_lib.load(os.path.join(ROOT, "configs", "study.py:smoke"))
  config_lib.apply_overrides(c, ["experiments=['fig1','attribution','h1']", "foundations=2"])
  stages = {st.name: st for st in study.plan(c, str(tmp_path))}
  redrawn = sorted(n[3:] for n in stages if n.startswith("f1/"))
  first = sorted(n for n in stages if not n.startswith("f1/") and stages[n].group != "h1")
  assert redrawn == first  # the foundation, Fig. 1 and the attribution; H1 only on the first
  f1 = lambda n: stages["f1/" + n]
  assert f1("sft").config.seed == c.seed + 1000 and stages["sft"].config.seed == c.seed
  assert f1("pairs").params["seed"] == c.seed + 1000
  assert f1("pm").config.init.backbone == str(tmp_path / "f1" / "sft" / "export")
  assert f1("pm").config.data.replay_dir == str(tmp_path / "f1" / "pairs" / "train")
  on = f1(f"online_ipo_s{c.seeds[1]}")
  assert on.arm == "online_ipo" and on.run["foundation"] == 1 and on.sft_eval == "f1/sft_eval"
  assert stages[f"online_ipo_s{c.seeds[1]}"].run["foundation"] == 0
  assert on.config.seed == c.seed + 1000 + c.seeds[1]
  assert on.config.judge.checkpoint == str(tmp_path / "f1" / "pm" / "export")
  assert on.config.eval.reference == str(tmp_path / "f1" / "sft" / "export")
  assert set(on.deps) >= {"f1/sft", "f1/pairs", "f1/pm", "f1/sft_eval"}
  assert all(d.startswith("f1/") for st in stages.values() if st.name.startswith("f1/")
             for d in st.deps)
  off = f1("offline_ipo_proxy_labels_s0")
  assert off.config.data.replay_dir == str(tmp_path / "f1" / "proxy_labels" / "train")
  # A redrawn foundation's hashes differ from the first's (its seed is in every config).
  hashes = stages_lib.stage_hashes(list(stages.values()), str(tmp_path))
  assert hashes["f1/sft"] != hashes["sft"] and hashes["f1/online_ipo_s0"] != hashes["online_ipo_s0"]


@pytest.mark.parametrize("overrides, message", [
    (["foundations=0"], "at least 1"),
    (["foundations=2", "golden_policy=True"], "a redrawn foundation needs"),
    (["foundations=2", "foundation_experiments=['fig1','h5']"], r"\['h5'\] not in"),
    (["foundations=2", "experiments=['fig1','attribution']",
      "foundation_experiments=['attribution']"], "attribution needs"),
])
def test_foundation_settings_that_cannot_run_are_refused(tmp_path, overrides, message):
  c = config_lib.load(os.path.join(ROOT, "configs", "study.py:smoke"))
  config_lib.apply_overrides(c, overrides)
  with pytest.raises(config_lib.ConfigError, match=message):
    study.plan(c, str(tmp_path))


def test_each_arm_gets_gao_et_al_s_law_fitted_with_intervals():
  """Curves drawn from the laws themselves (with per-prompt noise): the fits recover
  alpha and beta within their intervals, place the RL curve's peak where the law says,
  and say when a curve does not turn down."""
  from alignment import laws  # pylint: disable=g-import-not-at-top
  kl = np.array([0.0, 0.05, 0.2, 0.5, 1.0, 2.0, 3.0, 4.5])
  d = laws.distance(kl)
  rl = 1.0 + laws.predict("rl", 0.4, 0.5, d)            # peaks at d = exp(0.8 - 1)
  bon = 1.0 + laws.predict("bon", 0.6, 0.2, d)          # peaks at d = 1.5
  rising = 1.0 + laws.predict("rl", 0.8, -0.1, d)       # never turns down
  falling = 1.0 + laws.predict("rl", -0.2, 0.3, d)      # peaks before the first point
  ctx = (Arms().add("online_ipo", "online", [0.5] * 8, kl, score=rl)
         .add("online_slic", "online", [0.5] * 8, kl, algorithm="slic", score=falling)
         .add("online_best_of_2", "online", [0.5] * 8, kl, algorithm="best_of_2", score=bon)
         .add("offline_ipo", "offline", [0.5] * 8, kl, score=rising)
         .add("no_scores", "offline", [0.5] * 8, kl).context())
  for arm, form, alpha, beta in (("online_ipo", "rl", 0.4, 0.5),
                                 ("online_best_of_2", "bon", 0.6, 0.2),
                                 ("offline_ipo", "rl", 0.8, -0.1)):
    f = arms_lib.arm_numbers(ctx, arm)["law"]
    assert f["form"] == form and f["points"] == 8 and f["r2"] > 0.9, arm
    for key, truth in (("alpha", alpha), ("beta", beta)):
      lo, hi = f[key]["interval"]
      assert lo <= truth <= hi and hi - lo < 0.3, (arm, key, f[key])
  peak = arms_lib.law(ctx, "online_ipo")["peak_kl"]
  assert peak["interval"][0] <= np.exp(2 * (0.8 - 1)) <= peak["interval"][1]
  assert arms_lib.law(ctx, "offline_ipo")["peak_kl"]["estimate"] is None
  assert not arms_lib.law(ctx, "offline_ipo")["turns_down"]
  # A fitted peak before the first evaluated point is placed there, never at KL ~ 0.
  early = arms_lib.law(ctx, "online_slic")
  assert early["turns_down"] and early["peak_kl"]["estimate"] == pytest.approx(0.05, rel=0.02)
  assert all(np.isfinite(x) for x in early["peak_kl"]["interval"])
  assert arms_lib.law(ctx, "no_scores") is None and "law" not in arms_lib.arm_numbers(
      ctx, "no_scores")
  lines = "\n".join(arms_lib.law_lines(ctx, ["online_ipo", "offline_ipo"]))
  assert "online_ipo: rl law, alpha 0.4" in lines and "does not turn down" in lines
  points = arms_lib.law_points(ctx, ["online_best_of_2"])["online_best_of_2"]
  assert points["form"] == "bon" and points["gain"][0] == 0.0 and len(points["d"]) == 8


def test_finding_1_is_computed_per_set_of_foundations():
  """The experiments that ran on the first foundation alone ask whether its runs show
  an online advantage, not the pooled runs."""
  a = _fig1(AHEAD, BEHIND)
  for run in a.runs:
    run["foundation"] = 1 if run["name"].endswith("_s2") else 0
  for d in a.data.values():
    d.foundations = np.array([0, 0, 1])
  ctx = a.context()
  first = ctx.first_foundation()
  assert ctx.foundations() == [0, 1] and first.foundations() == [0]
  assert first.data["online_ipo"].seeds == 2 and first.memo is ctx.memo
  pooled, alone = fig1.finding_1(ctx, PASSED), fig1.finding_1(first, PASSED)
  assert pooled is not alone and fig1.finding_1(ctx, PASSED) is pooled


def test_finding_4_reads_one_set_of_foundations():
  """H3's chosen log-prob claim reads every contrastive arm: where some ran on the first
  foundation alone (DPO, SLiC), every claim of finding 4 reads the first foundation's
  runs, never pooled arms beside first-foundation ones."""
  a = Arms()
  a.add("online_ipo", "online", AHEAD, KL, classifier=[0.5, 0.45, 0.45, 0.45],
        chosen=[0.0, -0.5, -1.0, -1.0])
  a.add("offline_ipo", "offline", BEHIND, KL, classifier=[0.5, 0.7, 0.7, 0.7],
        chosen=[0.0, -1, -2.0, -3.0])
  a.add("online_dpo", "online", AHEAD, KL, group="losses", algorithm="dpo")
  pooled = {"online_ipo", "offline_ipo"}
  for run in a.runs:  # Fig. 1's third seeds on a redrawn foundation; DPO's all first
    run["foundation"] = 1 if run["arm"] in pooled and run["name"].endswith("_s2") else 0
  for arm, d in a.data.items():
    d.foundations = np.array([0, 0, 1] if arm in pooled else [0, 0, 0])
  ctx = a.context()
  assert ctx.over(["online_ipo", "offline_ipo"]) is ctx
  first = ctx.over(["online_ipo", "online_dpo"])
  assert first.foundations() == [0] and first.data["online_ipo"].seeds == 2
  f4 = fig1.finding_4(ctx, PASSED)
  alone = fig1.finding_4(ctx.first_foundation(), PASSED)
  assert [p["estimate"] for p in f4["parts"]] == [p["estimate"] for p in alone["parts"]]
  assert f4["parts"][0]["estimate"] != ctx.claim(
      "x", lambda: ctx.cv("offline_ipo").classifier[:, -1] -
      ctx.cv("online_ipo").classifier[:, -1])["estimate"]


@pytest.mark.parametrize("overrides, message", [
    (["learning_rates=[1e-4,1.000001e-4,3e-4]"], "distinct to 6 significant digits"),
    (["betas=[0.1,0.1000001]"], r"study.betas=.*distinct"),
    (["betas=[0.1,-0.5]"], r"study.betas=.*positive"),
])
def test_grid_points_that_would_share_an_arm_name_are_refused(tmp_path, overrides, message):
  c = config_lib.load(os.path.join(ROOT, "configs", "study.py:smoke"))
  config_lib.apply_overrides(c, overrides)
  with pytest.raises(config_lib.ConfigError, match=message):
    study.plan(c, str(tmp_path))


@pytest.mark.parametrize("listed", ["h4", "h5", "sec6", "writer"])
def test_experiments_that_read_fig1_need_it_listed(tmp_path, listed):
  c = config_lib.load(os.path.join(ROOT, "configs", "study.py:smoke"))
  config_lib.apply_overrides(c, [f"experiments=['{listed}']"])
  with pytest.raises(config_lib.ConfigError, match=f"{listed} .*list"):
    study.plan(c, str(tmp_path))
