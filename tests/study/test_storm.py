"""A study through a preemption storm, and three studies side by side (issue 27, items 1, 3).

One reduced smoke study (Fig. 1 at one seed, a few steps: SFT, the D_golden pair set, the
proxy PM, the SFT evaluation, online and offline IPO with checkpoints and evaluations,
the report) run as `python -m alignment.study`:
- alone, on a fresh data directory and XLA cache: the reference;
- then one entry of that cache damaged, and three started at the same moment, each its
  own workdir, sharing one fresh data directory (the environment is built there once,
  under tfds_env's lock) and the cache: JAX skips the damaged entry with a warning
  and each compiles it again;
- the storm: the same study interrupted 20 times and more (tests/storm.py), restarted
  each time, ends with the reference's results.json, report.md and plots.
"""
import json
import os
import subprocess
import time

import pytest

import storm as S

OVERRIDES = ["experiments=['fig1']", "seeds=[0]", "sft.steps=4", "pm.steps=2",
             "online.steps=4", "offline.steps=4", "checkpoint_every=2", "eval.points=2"]
STAGES = ["sft", "pairs", "pm", "sft_eval", "online_ipo_s0", "offline_ipo_s0"]
PLOTS = ["agreement.png", "budget_fig1.png", "chosen_logprob.png",
         "classifier_vs_winrate.png", "laws_fig1.png"]
# Planned in stage order; each attempt carries those not fired yet (tests/storm.py).
FAULTS = ["kill@during_checkpoint:2",      # SFT's first checkpoint, half written
          "term@after_step:3",             # a preemption notice inside SFT's loop
          "kill@after_stage:sft",          # SFT finished, not yet marked done
          "kill@pairs:train",              # pair-set generation, nothing written yet
          "term@pairs:held_out",           # ... its train split written
          "kill@after_stage:pairs",
          "term@during_checkpoint:2",      # the PM's checkpoint
          "kill@evaluation",               # the SFT evaluation, mid-way
          "term@evaluation",
          "kill@during_checkpoint:4",      # online IPO's last checkpoint
          "term@evaluation",               # an evaluation inside the online loop
          "kill@during_checkpoint:2",      # offline IPO
          "kill@report",                   # results.json staged, plots not yet
          "term@report"]
MIN_INTERRUPTIONS = 20
CACHE_WARNING = "Error reading persistent compilation cache entry"


def _read(workdir):
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
  """The lone reference on a fresh data directory and XLA cache; one entry of that cache
  damaged; then three studies side by side on another fresh data directory and the
  (damaged) cache. The side-by-side studies read the programs the reference compiled
  (compiling them three times over cost the suite minutes), and all three meet the
  damaged entry at once: each must skip it with a warning and compile it again, three
  writers of one cache key."""
  top = tmp_path_factory.mktemp("storm")
  cache = str(top / "xla")
  ref = str(top / "reference")
  t = time.time()
  lone = subprocess.run(S.study_cmd(ref, OVERRIDES), cwd=S.ROOT,
                        env=S.study_env(str(top / "data_ref"), cache), text=True,
                        capture_output=True, timeout=900)
  lone_seconds = time.time() - t
  assert lone.returncode == 0 and S.DONE in lone.stdout, lone.stderr[-3000:]
  damaged = _damage_one_entry(cache)
  data = str(top / "data")
  env = S.study_env(data, cache)
  side = [str(top / f"side{i}") for i in range(3)]
  procs = [subprocess.Popen(S.study_cmd(w, OVERRIDES), cwd=S.ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE) for w in side]
  outs = [p.communicate(timeout=900) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0 and S.DONE in out, err[-3000:]
  return {"top": top, "data": data, "cache": cache, "env": env, "side": side,
          "side_stdout": [o for o, _ in outs], "side_stderr": [e for _, e in outs],
          "reference": ref, "damaged": damaged, "lone_seconds": lone_seconds}


def _damage_one_entry(cache: str) -> str:
  """Flips bytes in the middle of the cache's largest entry (a training step)."""
  entries = sorted((os.path.getsize(os.path.join(cache, n)), n) for n in os.listdir(cache)
                   if n.endswith("-cache"))
  name = entries[-1][1]
  with open(os.path.join(cache, name), "r+b") as f:
    data = bytearray(f.read())
    mid = len(data) // 2
    data[mid:mid + 16] = bytes(b ^ 0xFF for b in data[mid:mid + 16])
    f.seek(0)
    f.write(data)
  return name


@pytest.mark.e2e
@pytest.mark.slow
def test_studies_side_by_side_share_data_and_cache(studies):
  """Three studies at once on a fresh data directory and one XLA cache: the environment
  is built once (the others wait and read it), all three give the lone study's
  results; the cache had one entry damaged: each warns, compiles it again and gives
  the same results."""
  built = sum(o.count("Dataset digest_env downloaded and prepared") for o in
              studies["side_stdout"])
  assert built == 1, built
  root = os.path.join(studies["data"], "digest_env", "tiny")
  assert os.listdir(root) == ["1.2.0"]  # no torn or half-written build beside it
  ref = studies["reference"]
  want = _read(ref)
  for w in studies["side"]:
    assert S.same_results(_read(w), want) == [], w
    for stage in STAGES:
      assert S.stage_outputs(os.path.join(w, stage)) == S.stage_outputs(
          os.path.join(ref, stage)), (w, stage)
    _same_report_and_plots(w, ref)
  for err in studies["side_stderr"]:
    assert CACHE_WARNING in err, err[-2000:]


@pytest.mark.e2e
@pytest.mark.slow
def test_preemption_storm_ends_with_the_uninterrupted_results(studies, capsys):
  """At least 20 interruptions (fault points in every kind of work, and seeded SIGTERMs
  and SIGKILLs at random moments), the same command restarted each time: the results,
  report and plots of the uninterrupted study; a stage marked done always holds its
  whole output; a stale lock taken over after every SIGKILL that left one; at most one
  stage started again per interruption."""
  ref = studies["reference"]
  want_outputs = {s: S.stage_outputs(os.path.join(ref, s)) for s in STAGES}

  def check(workdir):
    for s in STAGES:
      if os.path.exists(os.path.join(workdir, s, "STAGE.json")):
        got = S.stage_outputs(os.path.join(workdir, s))
        assert sorted(got) == sorted(want_outputs[s]), s
        bad = [k for k, v in got.items() if v != want_outputs[s][k]]
        assert not bad, (s, bad)

  workdir = str(studies["top"] / "storm")
  out = S.storm(S.study_cmd(workdir, OVERRIDES), studies["env"], workdir, FAULTS, seed=27,
                min_interruptions=MIN_INTERRUPTIONS, check=check)
  attempts = out["attempts"]
  with capsys.disabled():
    print(f"\nstorm: {out['interruptions']} interruptions in {len(attempts)} attempts, "
          f"{out['seconds']:.0f}s against {studies['lone_seconds']:.0f}s uninterrupted "
          f"(x{out['seconds'] / studies['lone_seconds']:.1f}); stages started "
          f"{out['stages_started']} for {len(STAGES)}; faults not reached {out['faults_left']}")
    for i, a in enumerate(attempts):
      what = a.fault if a.how == "fault" else a.signal
      print(f"  {i + 1:2d} {a.how:8s} {what:28s} in {a.landed:15s} "
            f"status {a.returncode:4d} {a.seconds:5.1f}s")
  assert attempts[-1].how == "finished"
  fired = {S.key(f)[0] for a in attempts if a.how == "fault" for f in a.fault.split("+")}
  assert fired >= {"after_step", "during_checkpoint", "after_stage", "pairs", "evaluation",
                   "report"}, (fired, out["faults_left"])
  assert out["interruptions"] >= MIN_INTERRUPTIONS
  assert {a.how for a in attempts} >= {"fault", "SIGTERM", "SIGKILL"}
  assert out["stages_started"] <= len(STAGES) + out["interruptions"]
  assert any(a.took_over_lock for a in attempts)
  assert S.same_results(_read(workdir), _read(ref)) == []
  _same_report_and_plots(workdir, ref)


def _same_report_and_plots(workdir, ref):
  with open(os.path.join(workdir, "report.md")) as f, \
      open(os.path.join(ref, "report.md")) as g:
    assert S.timeless_report(f.read()) == S.timeless_report(g.read()), workdir
  for png in PLOTS:
    with open(os.path.join(workdir, png), "rb") as f, open(os.path.join(ref, png), "rb") as g:
      assert f.read() == g.read(), (workdir, png)
