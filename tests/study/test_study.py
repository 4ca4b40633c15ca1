"""The study at smoke scale: the whole pipeline, the results schema, caching, kill and resume.

These check the machinery, not the findings (a smoke study trains for a few
steps; its findings are whatever those steps give).
"""
import json
import os
import subprocess
import sys

import pytest

from alignment import config as config_lib
from alignment import study
import xla_env  # tests/xla_env.py

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
POINT_KEYS = {"step", "kl", "golden_win_rate", "golden_win_rate_se", "proxy_win_rate",
              "classifier_accuracy", "chosen_logprob_delta", "mean_response_length",
              "proxy_golden_agreement"}


def _smoke():
  return config_lib.load(os.path.join(ROOT, "configs", "study.py:smoke"))


@pytest.fixture(scope="module")
def smoke_study(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("study")
  out = study.run(_smoke(), str(workdir))
  return workdir, out


@pytest.mark.e2e
@pytest.mark.slow
def test_results_schema_report_and_plots(smoke_study):
  workdir, out = smoke_study
  with open(workdir / "results.json") as f:
    results = json.load(f)
  # The gate first, then the attribution, then the findings.
  assert list(results)[:4] == ["study", "setup", "attribution", "findings"]
  names = {r["name"] for r in results["runs"]}
  assert "replay_ordered" not in names  # a determinism check of training statistics only
  assert {"online_ipo_s0", "online_ipo_s1", "offline_ipo_s0", "offline_ipo_s1",
          "online_ipo_golden_s0", "online_ipo_golden_s1", "offline_ipo_proxy_labels_s0",
          "offline_ipo_proxy_labels_s1",
          "replay_shuffled_s0", "offline_peak_pairs_s0", "offline_final_pairs_s0",
          "online_best_of_2_s0", "offline_best_of_2_s0", "offline_best_of_2_replay_s0",
          "offline_writer_pairs_s0", "offline_gap_pairs_s0", "offline_mixed_pairs_s0"} <= names
  judges = {r["name"]: r["hparams"].get("judge") for r in results["runs"]}
  assert judges["online_ipo_golden_s1"] == "golden" and judges["online_ipo_s1"] == "proxy"
  attribution = results["attribution"]
  assert set(attribution["envelope"]) == {
      "sampling_at_proxy_labels", "sampling_at_golden_labels", "labels_online",
      "labels_offline", "interaction", "fig1_gap"}
  assert attribution["arms"] == {"on/proxy": "online_ipo", "on/golden": "online_ipo_golden",
                                 "off/proxy": "offline_ipo_proxy_labels",
                                 "off/golden": "offline_ipo"}
  assert 0.0 <= attribution["proxy_labels_agree_with_golden"] <= 1.0
  # Two seeds per arm at smoke scale: shown, never voted.
  assert attribution["sentence"].startswith("Not read") or not results["setup"]["gate_passed"]
  # Gao et al.'s laws, fitted to every arm with golden scores; drawn for Fig. 1's.
  law = results["arms"]["online_ipo"]["law"]
  assert law["form"] == "rl" and law["points"] == len(results["runs"][0]["points"])
  assert results["arms"]["online_best_of_2"]["law"]["form"] == "bon"
  assert "laws_fig1.png" in out["plots"]
  labelled = json.loads((workdir / "proxy_labels" / "STAGE.json").read_text())["summary"]
  assert labelled["train"]["pairs"] == 64 and labelled["train"]["labelled_by"] == "model"
  for run in results["runs"]:
    assert run["algorithm"] in ("ipo", "dpo", "slic", "best_of_2")
    assert run["mode"] in ("online", "offline")
    assert isinstance(run["data"], str) and isinstance(run["hparams"], dict)
    assert "seed" in run["hparams"]
    assert len(run["points"]) == 4 and [p["step"] for p in run["points"]] == [0, 2, 4, 8]
    for p in run["points"]:
      assert POINT_KEYS <= set(p), (run["name"], p)
    # The step-0 point is the SFT policy against the same reference as every other point.
    assert run["points"][0]["reference_golden_score"] == run["points"][1][
        "reference_golden_score"]
  assert results["arms"]["online_ipo"]["seeds"] == 2
  assert {"sft_minus_writer_offline_peak", "sft_minus_gap_offline_peak",
          "sft_minus_mixed_offline_peak"} <= set(results["ablations"])
  found = {f["id"]: f for f in results["findings"]}
  assert {1, 2, 3, 4, 5, 7} <= set(found)
  for f in found.values():
    assert f["verdict"] in ("reproduced", "not reproduced", "inconclusive", "not applicable")
    assert not [p for p in f["parts"] if p["status"] == "voted"]  # fewer than 3 seeds
    assert f["parts"] and f["numbers"] and f["rule"]
    for part in f["parts"]:
      lo, hi = part["interval"]
      assert lo is None or lo <= part["estimate"] <= hi, part
  # The ordered replay of the online stream is the online run: to the bit where the
  # session compiles both loops' steps alike (xla_env), else within float32 rounding
  # (a batch shifted by one is 6e-2 apart).
  replay = found[2]["numbers"]["tandem_check"]["max_relative_difference_ordered_replay"]
  assert replay == 0.0 if xla_env.same_bits_across_programs() else replay < 1e-4, replay
  setup = results["setup"]
  lo, hi = setup["proxy_agreement_interval"]
  assert lo <= setup["proxy_agreement"] <= hi and setup["proxy_agreement_pairs"] == 64
  if not setup["gate_passed"]:  # a few smoke steps cannot rank anything: all inconclusive
    assert all(f["verdict"] == "inconclusive" for f in found.values())
  assert setup["d_golden"]["train"]["pairs"] == 64
  assert setup["d_golden"]["held_out"]["pairs"] == 64
  report = (workdir / "report.md").read_text()
  assert (report.index("## Set-up gate") < report.index("## The attribution") <
          report.index("## Findings") < report.index("## Fig. 1"))
  for png in out["plots"]:
    assert (workdir / png).stat().st_size > 1000, png
    assert f"({png})" in report
  # Per-prompt arrays behind every point; the online source kept its peak policy.
  assert (workdir / "online_ipo_s0" / "eval" / "step_000002.npz").exists()
  assert (workdir / "online_ipo_s0" / "eval" / "step_000008" / "model_config.json").exists()
  assert (workdir / "sft_eval" / "eval" / "step_000000.npz").exists()
  # Where the stage time went (alignment.timing): every stage's split adds up to its
  # seconds; a training stage spent some in steps, an online one in evaluation too.
  # The phases are kept to 0.1 s: a stage whose step an earlier stage of the same shape
  # compiled (alignment.programs) may spend under 0.05 s in its first step, and an
  # export of t5-nano about 0.1 s: first steps are summed by kind, exports over all.
  import collections  # pylint: disable=g-import-not-at-top
  from alignment import timing  # pylint: disable=g-import-not-at-top
  by_kind = collections.defaultdict(collections.Counter)
  for st in study.plan(_smoke(), str(workdir)):
    info = json.loads((workdir / st.name / "STAGE.json").read_text())
    split = info["seconds_by_phase"]
    assert set(split) == set(timing.PHASES) | {"other"}, st.name
    assert sum(split.values()) == pytest.approx(info["seconds"], abs=1.0), (st.name, split)
    if st.kind in ("sft", "pm", "online", "offline"):
      assert split["steps"] > 0, st.name
      by_kind[st.kind].update(split)
    if st.kind == "online":
      assert split["evaluation"] > 0 and split["checkpoint"] > 0, st.name
  for kind, split in by_kind.items():
    assert split["first_step"] > 0, (kind, split)
  assert sum(split["export"] for split in by_kind.values()) > 0, by_kind
  summed = json.loads((workdir / "stage_seconds.json").read_text())
  assert summed["all"]["stages"] == len(study.plan(_smoke(), str(workdir)))
  assert "Where it went, over the" in report and "training steps" in report


@pytest.mark.e2e
@pytest.mark.slow
def test_rerun_skips_finished_stages(smoke_study, capsys):
  workdir, _ = smoke_study
  study.run(_smoke(), str(workdir))
  printed = capsys.readouterr().out
  assert printed.count("done (cached)") == len(study.plan(_smoke(), str(workdir)))


@pytest.mark.e2e
@pytest.mark.slow
def test_killed_between_stages_resumes_to_the_same_results(smoke_study, tmp_path):
  """`python -m alignment.study` SIGKILLed right after a stage's work, before the
  stage is marked done, then the same command again: it reuses what finished,
  redoes the killed stage and ends with the uninterrupted study's results.json.
  (The study is the smoke study's with its last two stages undone, so only they
  run here.)"""
  import shutil  # pylint: disable=g-import-not-at-top
  workdir, _ = smoke_study
  shutil.copytree(workdir, tmp_path, dirs_exist_ok=True)
  last = study.plan(_smoke(), str(workdir))[-2:]
  assert [s.name for s in last] == ["mixed_pairs", "offline_mixed_pairs_s0"]
  for stage in last:
    shutil.rmtree(tmp_path / stage.name)
  os.remove(tmp_path / "results.json")
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
             XLA_FLAGS=xla_env.flags(8))
  cmd = [sys.executable, "-m", "alignment.study", "--config=configs/study.py:smoke",
         f"--workdir={tmp_path}"]
  killed = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          env=dict(env, ALIGNMENT_FAULT="kill@after_stage:mixed_pairs"))
  assert killed.returncode == -9, killed.stderr[-2000:]
  assert (tmp_path / "mixed_pairs").exists()  # its work was written ...
  assert not (tmp_path / "mixed_pairs" / "STAGE.json").exists()  # ... but not marked done
  assert not (tmp_path / "offline_mixed_pairs_s0").exists()
  assert not (tmp_path / "results.json").exists()
  resumed = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "sft: done (cached)" in resumed.stdout
  assert " mixed_pairs: done (cached)" not in resumed.stdout
  with open(workdir / "results.json") as f:
    want = json.load(f)
  with open(tmp_path / "results.json") as f:
    got = json.load(f)
  assert got == want


def test_unknown_experiment_is_named(tmp_path):
  c = _smoke()
  config_lib.apply_overrides(c, ["experiments=['fig1', 'h9']"])
  with pytest.raises(config_lib.ConfigError, match=r"unknown \['h9'\]"):
    study.plan(c, str(tmp_path))


# ---------------------------------------------------------------------------
# Beyond the smoke study: one command extends a copy of it
# ---------------------------------------------------------------------------

# Everything the smoke study's own experiments leave out, planned on its finished
# stages (reused by hash) and run by ONE command (one process, one report) instead
# of one study per experiment: RLOO and GRPO (a reward model, RLOO with it, GRPO with
# the pairwise PM; GRPO with the RM is the same two paths combined), online IPO 2
# steps stale, the judge axis, an experiment of your own named as a file, and Fig. 1
# over a learning-rate grid on its foundation and on a redrawn one (f1/: its own SFT,
# D_golden and PM), with H1 on the first foundation only. One seed: every check
# below is of the machinery (stages, rows, sections, plots), not of a reading.
EXTENDED = ["--config.seeds=[0]",
            "--config.experiments=['fig1', 'h1', 'rl', 'staleness', 'judge', "
            "'examples/beta_sweep.py']",
            "--config.rl.arms=['rloo_rm', 'grpo_pm']",
            "--config.foundations=2", "--config.foundation_experiments=['fig1']",
            "--config.learning_rates=[0.0003, 0.001]"]


@pytest.fixture(scope="module")
def extended(smoke_study, tmp_path_factory):
  """(workdir, results.json, the command's stdout) of EXTENDED on a copy of the smoke
  study, run from the command line as a user would."""
  import shutil  # pylint: disable=g-import-not-at-top
  workdir, _ = smoke_study
  out = tmp_path_factory.mktemp("extended") / "study"
  shutil.copytree(workdir, out)
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
             XLA_FLAGS=xla_env.flags(8))
  cmd = [sys.executable, "-m", "alignment.study", "--config=configs/study.py:smoke",
         f"--workdir={out}", *EXTENDED]
  done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
  assert done.returncode == 0, done.stderr[-3000:]
  with open(out / "results.json") as f:
    return out, json.load(f), done.stdout


def _extended_config():
  c = _smoke()
  config_lib.apply_overrides(c, [o[len("--config."):] for o in EXTENDED])
  return c


def _plotted(workdir, png: str, report: str) -> bool:
  return (workdir / png).stat().st_size > 1000 and f"({png})" in report


@pytest.mark.e2e
@pytest.mark.slow
def test_rl_and_staleness_experiments_write_their_plots_and_rows(extended):
  """RLOO with the reward model, GRPO with the pairwise PM and online IPO sampling 2
  steps behind, each compared with Fig. 1's online IPO."""
  workdir, results, _ = extended
  rl, stale = results["comparisons"]["rl"], results["comparisons"]["staleness"]
  assert set(rl) == {"online_rloo_rm", "online_grpo_pm"}
  assert set(stale) == {"online_ipo_stale2"}
  for c_ in list(rl.values()) + list(stale.values()):
    lo, hi = c_["peak_minus_online_ipo"]["interval"]
    assert lo <= c_["peak_minus_online_ipo"]["estimate"] <= hi
  runs = {r["name"]: r for r in results["runs"]}
  assert runs["online_grpo_pm_s0"]["algorithm"] == "grpo"
  assert runs["online_grpo_pm_s0"]["hparams"]["judge"] == "proxy"
  assert runs["online_rloo_rm_s0"]["algorithm"] == "rloo"
  assert runs["online_ipo_stale2_s0"]["hparams"]["staleness"] == 2
  assert all(c_["reading"]["peak"].startswith("not read") for c_ in stale.values())  # 1 seed
  setup = results["setup"]
  lo, hi = setup["rm_agreement_interval"]
  assert lo <= setup["rm_agreement"] <= hi and setup["rm_agreement_pairs"] == 64
  report = (workdir / "report.md").read_text()
  assert _plotted(workdir, "budget_rl.png", report)
  assert _plotted(workdir, "budget_staleness.png", report)
  assert "## Beyond the paper: RLOO and GRPO" in report and "online_grpo_pm - online IPO" in report
  assert "## Beyond the paper: staleness" in report
  readings = results["comparison_readings"]
  assert set(readings) == {"rl", "staleness", "beta_sweep"}
  assert all(r in report for r in readings.values())
  assert all(set(c_["reading"]) == {"peak", "envelope"} for c_ in stale.values())
  assert ("(the k = infinity end)" if setup["gate_passed"] else "inconclusive") in \
      readings["staleness"]


def test_an_experiment_of_your_own_is_found_by_module_name_or_file(tmp_path, monkeypatch):
  """examples/beta_sweep.py, named as a module from the repository's root or as a
  file, plans its stages after the built-in ones; a broken module is one line."""
  monkeypatch.chdir(ROOT)
  for name in ("examples.beta_sweep", "examples/beta_sweep.py"):
    c = _smoke()
    config_lib.apply_overrides(c, [f"experiments=['{name}', 'fig1']"])
    stages = study.plan(c, str(tmp_path))
    names = [st.name for st in stages]
    assert names[-2:] == ["online_ipo_beta0.03_s0", "online_ipo_beta0.3_s0"], names
    last = stages[-1]
    assert last.group == "beta_sweep" and last.run["hparams"]["beta"] == 0.3
    assert last.config.loss.beta == 0.3 and "pm" in last.deps
  c = _smoke()
  config_lib.apply_overrides(c, ["experiments=['examples/beta_sweep.py']"])
  with pytest.raises(config_lib.ConfigError, match="beta_sweep is compared with Fig. 1's "
                     "online IPO; list 'fig1' too"):
    study.plan(c, str(tmp_path))
  bad = {"none.py": "X = 1\n", "broken.py": "import no_such_module_here\n",
         "clash.py": "from alignment.study.experiments import h4\nEXPERIMENT = h4.H4()\n"}
  for file, text in bad.items():
    (tmp_path / file).write_text(text)
  for file, message in (("none.py", "defines no EXPERIMENT"),
                        ("broken.py", "cannot import it: ModuleNotFoundError"),
                        ("clash.py", "must be set and differ from the built-in"),
                        ("missing.py", "no such file")):
    c = _smoke()
    path = str(tmp_path / file)
    config_lib.apply_overrides(c, [f"experiments=['fig1', '{path}']"])
    with pytest.raises(config_lib.ConfigError, match=message) as e:
      study.plan(c, str(tmp_path))
    assert f"study.experiments: '{path}'" in str(e.value)


@pytest.mark.e2e
@pytest.mark.slow
def test_an_experiment_of_your_own_runs_from_the_command_line(extended):
  """The example experiment, named on the command line as a file, on the smoke study's
  foundation and Fig. 1 (reused by hash): its two runs, its comparisons with Fig. 1's
  online IPO in results.json, its section and plot in the report."""
  workdir, results, stdout = extended
  assert "online_ipo_s0: done (cached)" in stdout  # Fig. 1 is reused, not rerun
  assert " sft: done (cached)" in stdout
  compared = results["comparisons"]["beta_sweep"]
  assert set(compared) == {"online_ipo_beta0.03", "online_ipo_beta0.3"}
  for c in compared.values():
    lo, hi = c["peak_minus_online_ipo"]["interval"]
    assert lo <= c["peak_minus_online_ipo"]["estimate"] <= hi
  runs = {r["name"]: r for r in results["runs"]}
  assert runs["online_ipo_beta0.03_s0"]["hparams"]["beta"] == 0.03
  assert [p["step"] for p in runs["online_ipo_beta0.3_s0"]["points"]] == [0, 2, 4, 8]
  report = (workdir / "report.md").read_text()
  assert "## Example: online IPO at other betas" in report
  assert results["comparison_readings"]["beta_sweep"] in report
  assert _plotted(workdir, "budget_beta_sweep.png", report)


@pytest.mark.e2e
@pytest.mark.slow
def test_a_redrawn_foundation_and_a_learning_rate_grid_enter_the_intervals(extended):
  """Fig. 1's arms pool both foundations' runs and its claims carry both; H1's claims
  read the first foundation's runs alone."""
  workdir, results, _ = extended
  c = _extended_config()
  runs = {r["name"]: r for r in results["runs"]}
  assert runs["f1/online_ipo_s0"]["foundation"] == 1 and runs["online_ipo_s0"]["foundation"] == 0
  assert runs["f1/offline_ipo_lr0.001_s0"]["hparams"]["learning_rate"] == 0.001
  assert runs["f1/online_ipo_s0"]["hparams"]["seed"] == c.seed + 1000
  assert not [n for n in runs if n.startswith("f1/replay")]
  assert not [n for n in runs if n.startswith("f1/") and "stale" in n]  # fig1's alone
  arms = results["arms"]
  for arm in ("online_ipo", "offline_ipo", "online_ipo_lr0.001", "offline_ipo_lr0.001"):
    assert arms[arm]["seeds"] == 2 * len(c.seeds), arm
  (redrawn,) = results["setup"]["redrawn_foundations"]
  assert redrawn["foundation"] == 1 and redrawn["proxy_agreement_pairs"] == 64
  assert results["setup"]["all_foundations_passed"] == (results["setup"]["gate_passed"] and
                                                        redrawn["gate_passed"])
  found = {f["id"]: f for f in results["findings"]}
  assert all(p["foundations"] == 2 for p in found[1]["parts"][:2])
  assert all(p["foundations"] == 1 for p in found[2]["parts"])
  assert "pooled over the same learning rates x betas" in found[1]["parts"][0]["claim"]
  report = (workdir / "report.md").read_text()
  assert "foundation 1 (redrawn)" in report and _plotted(workdir, "budget_fig1.png", report)


@pytest.mark.e2e
@pytest.mark.slow
def test_the_judge_axis_runs_at_smoke_scale(extended):
  """The judge axis (one seed): its stages run, its block and section are written, and
  the agreement of the noisy golden judge is exact."""
  from alignment.study import stages as stages_lib  # pylint: disable=g-import-not-at-top
  from alignment.study.experiments import judge as J  # pylint: disable=g-import-not-at-top
  workdir, results, _ = extended
  block = results["judge_axis"]
  assert set(block["judges"]) == {"golden_flip0.2", "pm_quarter", "pm", "pm_4x"}
  noisy = block["judges"]["golden_flip0.2"]["agreement"]
  summary = stages_lib.stage_summary(str(workdir), "noisy_golden_flip0.2")
  assert noisy["agreement"] == pytest.approx(1 - summary["flipped"], abs=1e-4)  # argmax labels
  assert noisy["pairs"] == 64 and noisy["interval"][0] <= noisy["agreement"]
  quarter = stages_lib.stage_summary(str(workdir), "pairs_quarter")["train"]
  assert quarter["pairs"] == 16 and quarter["golden_winner_is_label"] == 1.0
  assert stages_lib.stage_summary(str(workdir), "pairs_4x")["train"]["pairs"] == 256
  for name, e in block["judges"].items():
    assert e["agreement"]["pairs"] == 64, name
    assert e["reading"]["envelope"].startswith("not read")  # one seed
  assert set(block["series"]) == {J.NOISY, J.LEARNED}
  runs = {r["name"]: r for r in results["runs"]}
  assert runs["online_ipo_golden_flip0.2_s0"]["hparams"]["judge_flip"] == 0.2
  report = (workdir / "report.md").read_text()
  assert "## The judge-quality axis" in report and block["sentence"] in report
  assert _plotted(workdir, "judge_axis.png", report)


@pytest.mark.e2e
@pytest.mark.slow
def test_the_report_shows_what_the_policies_write(smoke_study):
  """For the first eval.samples (3) win prompts: the SFT policy's response, the online
  and offline peaks' (seed 0, at their arm's peak step), each the very sample the win
  rate scored (its golden score is the point's, and the golden program gives it again
  from the recorded texts)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from alignment import evaluation, layout  # pylint: disable=g-import-not-at-top
  from alignment.data import golden, tasks  # pylint: disable=g-import-not-at-top
  from alignment.study import arms, report  # pylint: disable=g-import-not-at-top
  workdir, _ = smoke_study
  results = json.loads((workdir / "results.json").read_text())
  peak = {a: results["arms"][a]["peak_step"] for a in ("online_ipo", "offline_ipo")}
  want = [("SFT", "online_ipo_s0", 0), ("online peak", "online_ipo_s0", peak["online_ipo"]),
          ("offline peak", "offline_ipo_s0", peak["offline_ipo"])]
  samples = results["samples"]
  assert [(s["policy"], s["run"], s["step"], s["prompt_index"]) for s in samples] == [
      w + (i,) for w in want for i in range(3)]
  judge = golden.GoldenJudge(tasks.task_vocabulary("env_tiny_prompts"))
  report_md = (workdir / "report.md").read_text()
  assert "## What the policies write" in report_md
  for s in samples:
    stage = layout.stage(str(workdir), "sft_eval" if s["step"] == 0 else s["run"])
    scores = evaluation.load_arrays(evaluation.arrays_path(stage, s["step"]))["golden_score"]
    assert s["golden_score"] == scores[s["prompt_index"]], s
    recorded = evaluation.load_samples(evaluation.samples_path(stage, s["step"]))
    ended = recorded[s["prompt_index"]]["ended_at_eos"]
    again = judge.score_texts([s["prompt"]], [s["response"]], np.array([not ended]))
    assert float(again[0]) == s["golden_score"], s
    assert s["prompt"] == samples[s["prompt_index"]]["prompt"]  # one prompt, three policies
    assert (f"| {s['policy']} | {s['run']} | {s['step']} | {arms.r(s['golden_score'])} | "
            f"{report.md_text(s['response']) or '*(empty)*'} |") in report_md, s
  for i in range(3):
    assert f"**Prompt {i + 1}:** {report.md_text(samples[i]['prompt'])}" in report_md
