"""A study across the processes of a multi-process job (`launch/local.sh` with
MODULE=alignment.study): 2 processes x 2 CPU devices, one of them killed
mid-stage and the same launch run again, write the results.json of 1 process x
4 devices.

The study is the smoke study cut to Fig. 1 with one seed: SFT, D_golden (a pair
set: process 0 samples it alone, on its own 2 devices, while process 1 waits),
the proxy PM, the SFT policy's evaluation, an online and an offline IPO run
(every process in each), and the report (process 0). Every stage config's mesh
is data=-1, all devices: 4 either way, and data.virtual_shards makes the batches
independent of the process count. SFT is cut to 10 steps and the online run
lengthened to 12 so that only the online run reaches step 11, where process 1 is
killed (ALIGNMENT_FAULT): process 0 names it and exits, and the same launch again
reuses the marked stages and resumes the online run from its last checkpoint.
One 2-process study serves both tests (a second, uninterrupted one would add
about 2 minutes to the suite): a difference in the first could come from the
process count or from the resume.

Tolerances: sampled tokens and verdicts (both pair sets, the online run's
D_online stream) must be identical, and so must every verdict and string of
results.json. Its numbers must agree to 1e-4 relative, since gloo and the
in-process all-reduce add in different orders (tests/distributed/
test_multiprocess.py measured metrics 1.5e-5 apart at most), or 1e-5 absolute:
a point's kl and chosen_logprob_delta are means of differences of float32
log-probs near -20 to -40 (one ulp: 2e-6 to 4e-6), so near 0 only an absolute
bound means anything. results.json keeps the figures of its findings and laws to
3 or 4 decimals (`arms.r`), so a figure rounded there may also be one unit apart
in its last decimal where its unrounded values straddled a rounding boundary.
Measured on 2026-12-07, uninterrupted with 8 online steps: 7e-7 at most (a
chosen_logprob_delta of 4.3e-4, 1.6e-3 relative); as here: 7e-5 relative at most
(a chosen_logprob_delta, 4e-6 absolute), the laws' fitted coefficients 3e-4
absolute (2e-5 relative).

Time (2026-12-07, 2 cores that another job kept busy, load average 2.5 to 3.3):
3 min for the file, of which the 1-process study took 54 s, the killed 2-process
launch 82 s and the launch again 37 s; 5 1/2 minutes when more jobs pushed the
load to 3 to 5. Each run prints its wall time (`-s` shows it).
"""
import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest
import xla_env  # tests/xla_env.py

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STUDY = ["--config=configs/study.py:smoke", "--config.experiments=['fig1']",
         "--config.seeds=[0]", "--config.sft.steps=10", "--config.online.steps=12"]
STAGES = ["sft", "pairs", "pm", "sft_eval", "online_ipo_s0", "offline_ipo_s0"]
KILL = "kill@after_step:11/p1"  # step 11 of the online run (SFT 10, PM 10, offline 8)
HEARTBEAT = 10  # ALIGNMENT_HEARTBEAT_TIMEOUT of the study that loses a process


def _env(devices: int, xla_cache: str) -> dict:
  env = {k: v for k, v in os.environ.items() if not k.startswith("ALIGNMENT_")}
  env.update(XLA_FLAGS=xla_env.flags(devices),
             JAX_PLATFORMS="cpu", PYTHON=sys.executable, PYTHONPATH=ROOT,
             TF_CPP_MIN_LOG_LEVEL="3", MODULE="alignment.study")
  env["ALIGNMENT_XLA_CACHE"] = os.environ.get("ALIGNMENT_XLA_CACHE", xla_cache)
  return env


def _timed(what, cmd, env):
  start = time.monotonic()
  out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  print(f"[timing] {what}: {time.monotonic() - start:.0f} s", flush=True)
  return out


def _one_process(workdir, cache):
  out = _timed("1 process x 4 devices", [sys.executable, "-m", "alignment.study", *STUDY,
                                         f"--workdir={workdir}"], _env(4, cache))
  assert out.returncode == 0, out.stderr[-3000:]
  return out


def _two_processes(workdir, cache, fault=None, ok=True):
  env = _env(2, cache)
  if fault:
    env.update(ALIGNMENT_FAULT=fault, ALIGNMENT_HEARTBEAT_TIMEOUT=str(HEARTBEAT))
  out = _timed(f"2 processes x 2 devices{' with ' + fault if fault else ''}",
               ["bash", os.path.join(ROOT, "launch", "local.sh"), "2", "2", *STUDY,
                f"--workdir={workdir}"], env)
  assert (out.returncode == 0) == ok, out.stderr + _logs(workdir)
  return out


def _log(workdir, i):
  with open(os.path.join(workdir, f"process_{i}.log")) as f:
    return f.read()


def _logs(workdir):
  return "".join(_log(workdir, i)[-3000:] for i in range(2)
                 if os.path.exists(os.path.join(workdir, f"process_{i}.log")))


def _results(workdir):
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)


def _close(a: float, b: float) -> bool:
  """Within 1e-4 relative or 1e-5 absolute, or one unit apart in the last of the 3 or
  4 decimals kept."""
  if abs(a - b) <= max(1e-4 * max(abs(a), abs(b)), 1e-5):
    return True
  return any(round(a, d) == a and round(b, d) == b and abs(a - b) <= 1.01 * 10.0**-d
             for d in (3, 4))


def _assert_same_results(got, want, where="results.json"):
  """Same keys, lists, strings and verdicts; numbers `_close`."""
  if isinstance(want, dict):
    assert isinstance(got, dict) and got.keys() == want.keys(), (where, set(got) ^ set(want))
    for k in want:
      _assert_same_results(got[k], want[k], f"{where}/{k}")
  elif isinstance(want, list):
    assert isinstance(got, list) and len(got) == len(want), where
    for i, (g, w) in enumerate(zip(got, want)):
      _assert_same_results(g, w, f"{where}[{i}]")
  elif isinstance(want, float) and not isinstance(got, (bool, str)) and \
      isinstance(got, (int, float)):
    assert _close(float(got), want), (where, got, want)
  else:
    assert got == want, (where, got, want)


def _assert_same_samples(a, b, directory):
  """Tokens, masks and verdicts of a stream or pair set identical in both."""
  from alignment.data import stream
  sa, sb = (stream.read_stream(os.path.join(w, directory), process_index=0, process_count=1)
            for w in (a, b))
  for k in ("step", "position", "prompt", "response_1", "response_1_mask", "response_2",
            "response_2_mask", "verdict"):
    np.testing.assert_array_equal(sb[k], sa[k], err_msg=f"{directory}: {k}")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """1 x 4 uninterrupted; 2 x 2 killed in the online run (what it left is recorded
  in `killed`), then launched again to the end."""
  base = tmp_path_factory.mktemp("multiprocess_study")
  cache, two = str(base / "xla"), base / "two"
  _one_process(base / "one", cache)
  out = _two_processes(two, cache, fault=KILL, ok=False)
  checkpoints = two / "online_ipo_s0" / "checkpoints"
  killed = {"stderr": out.stderr, "logs": [_log(two, i) for i in range(2)],
            "marked": sorted(st for st in STAGES if (two / st / "STAGE.json").exists()),
            "checkpoints": sorted(int(d) for d in os.listdir(checkpoints) if d.isdigit())
                           if checkpoints.exists() else [],
            "results": (two / "results.json").exists()}
  _two_processes(two, cache)  # the same launch again (its stale lock taken over)
  return base, killed


@pytest.mark.multiprocess
@pytest.mark.e2e
@pytest.mark.slow
def test_two_processes_write_the_results_of_one(runs):
  base, _ = runs
  one, two = base / "one", base / "two"
  _assert_same_results(_results(two), _results(one))
  for directory in ("pairs/train", "pairs/held_out", "online_ipo_s0/stream"):
    _assert_same_samples(one, two, directory)
  for stage in STAGES:  # marked by process 0 once every process had finished it
    assert json.loads((two / stage / "STAGE.json").read_text())["stage"] == stage
  assert not (two / "LOCK.json").exists()
  assert (two / "report.md").exists()
  log0, log1 = _log(two, 0), _log(two, 1)
  assert "[study] wrote" in log0
  assert "[study]" not in log1  # the study's lines and report are process 0's
  # Both processes wrote rows of the online run's stream; process 0 alone the pair set.
  chunks = os.listdir(two / "online_ipo_s0" / "stream")
  assert any("-h0000-" in c for c in chunks) and any("-h0001-" in c for c in chunks)
  assert not any("-h0001-" in c for c in os.listdir(two / "pairs" / "train"))


@pytest.mark.multiprocess
@pytest.mark.e2e
@pytest.mark.slow
def test_a_lost_process_mid_stage_then_the_same_launch_continues_the_study(runs):
  """Process 1 SIGKILLed after step 11 of the online run: process 0 names it in one
  line and exits (status 3) with the stages before marked and the online run not;
  the same launch again reuses the marked stages and resumes the online run from
  its last checkpoint (step 8, or 4 had step 8's asynchronous save not finished
  when process 1 died) to the end (the first test: the results of 1 process)."""
  base, killed = runs
  log0, log1 = killed["logs"]
  assert "[fault] SIGKILL at after_step:11" in log1, log1[-3000:]
  lines = [l for l in log0.splitlines() if l.startswith("error:")]
  assert len(lines) == 1 and lines[0].startswith("error: process 1 of 2 stopped responding"), \
      log0[-3000:]
  assert "rerun the same command to resume" in lines[0]
  assert "error: process 1 failed first (killed by SIGKILL)" in killed["stderr"]
  assert "error: process 0 failed too (exit status 3)" in killed["stderr"]
  assert killed["marked"] == sorted(STAGES[:4]) and not killed["results"]
  last = killed["checkpoints"][-1]
  assert last in (4, 8) and f"the last checkpoint is step {last};" in lines[0], killed
  log0 = _log(base / "two", 0)
  for i, stage in enumerate(STAGES[:4]):
    assert f"[study] {i + 1}/6 {stage}: done (cached)" in log0
  assert re.search(rf"resumed from \S*online_ipo_s0\S* at step {last}\b", log0), log0[-3000:]


def _held_by_a_live_process(workdir):
  """A LOCK.json of this host held by a live process that is not the study: this test."""
  import socket  # pylint: disable=g-import-not-at-top
  os.makedirs(workdir)
  record = {"host": socket.gethostname(), "pid": os.getpid(), "started": "now",
            "command": "pytest (holding the study's lock)"}
  with open(os.path.join(workdir, "LOCK.json"), "w") as f:
    json.dump(record, f)


@pytest.mark.multiprocess
def test_a_held_workdir_stops_every_process_with_the_holders_line(tmp_path):
  """Process 0 alone takes the study's lock; when it is refused, every process
  stops with the same one line (exit 2) before any stage, none waits for the others
  forever."""
  workdir = tmp_path / "held"
  _held_by_a_live_process(workdir)
  _two_processes(workdir, str(tmp_path / "xla"), ok=False)
  for i in range(2):
    lines = [l for l in _log(workdir, i).splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and "the workdir is held by another run" in lines[0], \
        _logs(workdir)
    assert "pytest (holding the study's lock)" in lines[0]
    assert "Traceback" not in _log(workdir, i)
  assert not (workdir / "sft").exists()


@pytest.mark.multiprocess
def test_processes_that_plan_other_stages_stop_before_running_any(tmp_path):
  """Every process plans the study; process 1 given another seed plans other stage
  hashes, and both stop with one line naming it instead of deadlocking later."""
  env = _env(2, str(tmp_path / "xla"))
  env.update(ALIGNMENT_COORDINATOR=f"localhost:{20000 + os.getpid() % 20000}",
             ALIGNMENT_NUM_PROCESSES="2")
  procs = [subprocess.Popen(
      [sys.executable, "-m", "alignment.study", *STUDY, f"--config.seed={i}",
       f"--workdir={tmp_path / 'study'}"], cwd=ROOT, env=dict(env, ALIGNMENT_PROCESS_ID=str(i)),
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
  outs = [p.communicate(timeout=300) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 2, err[-3000:]
    lines = [l for l in err.splitlines() if l.startswith("error:")]
    assert lines == ["error: processes [1] planned other stages than process 0 (their stages "
                     "or hashes differ): install the same code on every host and give every "
                     "process the same flags"], err[-3000:]
  assert not (tmp_path / "study" / "sft").exists()


def test_a_pair_set_mesh_fits_the_devices_of_one_process():
  """Process 0 samples a pair set on its own devices: a mesh that fits them is kept;
  one that does not (a 16-chip slice's fsdp=8 on a host of 4 chips) keeps as much of
  its model axes as divides them, the rest data-parallel."""
  from alignment.pairsets import local_mesh_shape
  assert local_mesh_shape({"data": -1, "fsdp": 1, "tensor": 1}, 2) == {
      "data": -1, "fsdp": 1, "tensor": 1}
  assert local_mesh_shape({"data": -1, "fsdp": 8, "tensor": 1}, 4) == {
      "data": -1, "fsdp": 4, "tensor": 1}
  assert local_mesh_shape({"data": 4, "fsdp": 1, "tensor": 1}, 2) == {
      "data": -1, "fsdp": 1, "tensor": 1}
  assert local_mesh_shape({"data": 1, "fsdp": 2, "tensor": 8}, 4) == {
      "data": -1, "fsdp": 1, "tensor": 4}
  assert local_mesh_shape({"data": -1, "fsdp": 6, "tensor": 1}, 4) == {
      "data": -1, "fsdp": 2, "tensor": 1}
