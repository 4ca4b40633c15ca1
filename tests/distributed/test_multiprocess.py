"""Real multi-process JAX: 2 processes x 2 CPU devices equal 1 process x 4 devices.

The processes are started by `launch/local.sh` (gloo collectives, the
coordinator on localhost), as a user would. The online `tiny` run against the
golden judge (no SFT or PM exports needed) must give the same metrics and the
same final parameters as one process with the same 4-device mesh, write the
same D_online stream, and a checkpoint written by the 2 processes must resume
in 1 process to the same end. Same batches on any process count is the
virtual-shard design of `alignment.data.pipeline`.

Tolerances: the collectives of gloo and of one process add in different
orders, so numbers agree to float32 rounding: metrics to 1e-5 relative
(log-probs near -160 differ in their last bit, 1.5e-5 absolute), parameters
to 1e-5 absolute. The sampled tokens, the verdicts and the stream are exact.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import xla_env  # tests/xla_env.py

# Every test here starts JAX as processes of a 2-process job.
pytestmark = [pytest.mark.multiprocess]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS, EVERY = 6, 3
HEARTBEAT = 10  # ALIGNMENT_HEARTBEAT_TIMEOUT of the runs that lose a process
FLAGS = ["--config=configs/online.py:tiny", "--config.judge.kind=golden",
         f"--config.train.num_steps={STEPS}", f"--config.train.checkpoint_every={EVERY}",
         "--config.train.log_every=1", f"--config.eval.every={STEPS}",
         "--config.mesh.data=4"]


def _env(devices: int) -> dict:
  env = {k: v for k, v in os.environ.items() if not k.startswith("ALIGNMENT_")}
  env.update(XLA_FLAGS=xla_env.flags(devices),
             JAX_PLATFORMS="cpu", PYTHON=sys.executable, PYTHONPATH=ROOT,
             TF_CPP_MIN_LOG_LEVEL="3")
  return env


def _one_process(workdir):
  out = subprocess.run([sys.executable, "-m", "alignment.main", *FLAGS, f"--workdir={workdir}"],
                       cwd=ROOT, env=_env(4), capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  return out


def _two_processes(workdir, flags=(), fault=None, ok=True):
  env = _env(2)
  if fault:
    env.update(ALIGNMENT_FAULT=fault, ALIGNMENT_HEARTBEAT_TIMEOUT=str(HEARTBEAT))
  out = subprocess.run(["bash", os.path.join(ROOT, "launch", "local.sh"), "2", "2", *FLAGS,
                        *flags, f"--workdir={workdir}"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
  assert (out.returncode == 0) == ok, out.stderr + _logs(workdir)
  return out


def checkpoint_steps(workdir) -> list[int]:
  """The finished checkpoints a rerun could resume from."""
  d = os.path.join(workdir, "checkpoints")
  return sorted(int(x) for x in os.listdir(d) if x.isdigit()) if os.path.isdir(d) else []


def _logs(workdir):
  return "".join(open(os.path.join(workdir, f"process_{i}.log")).read()[-2000:]
                 for i in range(2) if os.path.exists(os.path.join(workdir, f"process_{i}.log")))


def _metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [{k: v for k, v in json.loads(line).items() if "time" not in k and "per_s" not in k}
            for line in f if line.strip()]


def _params(workdir):
  import jax
  import orbax.checkpoint as ocp
  path = os.path.join(workdir, "export", "params")
  ckpt = ocp.PyTreeCheckpointer()
  tree = ckpt.metadata(path).item_metadata.tree
  args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
  return ckpt.restore(path, args=ocp.args.PyTreeRestore(restore_args=args))


def _assert_same_run(a, b):
  ma, mb = _metrics(a), _metrics(b)
  assert [r["step"] for r in ma] == [r["step"] for r in mb] and len(ma) == STEPS + 1
  for ra, rb in zip(ma, mb):
    assert ra.keys() == rb.keys()
    for k in ra:
      np.testing.assert_allclose(rb[k], ra[k], rtol=1e-5, atol=1e-5, err_msg=f"{k} {ra['step']}")
  import jax
  pa, pb = _params(a), _params(b)
  assert jax.tree.structure(pa) == jax.tree.structure(pb)
  for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)):
    np.testing.assert_allclose(y, x, rtol=0, atol=1e-5)
  from alignment.data import stream
  sa, sb = (stream.read_stream(os.path.join(d, "stream")) for d in (a, b))
  for k in ("step", "position", "prompt", "response_1", "response_2", "verdict"):
    np.testing.assert_array_equal(sa[k], sb[k])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  base = tmp_path_factory.mktemp("multiprocess")
  _one_process(base / "one")
  _two_processes(base / "two")
  return base


@pytest.mark.e2e
@pytest.mark.slow
def test_two_processes_equal_one(runs):
  _assert_same_run(runs / "one", runs / "two")
  evals = [r for r in _metrics(runs / "two") if "eval/golden_win_rate" in r]
  assert [r["step"] for r in evals] == [STEPS]  # evaluation ran, on every process alike
  # Process 0 alone logs; each process wrote its own rows of the stream.
  log1 = open(runs / "two" / "process_1.log").read()
  assert "[online] step" in open(runs / "two" / "process_0.log").read()
  assert "[online] step" not in log1
  chunks = sorted(os.listdir(runs / "two" / "stream"))
  assert any("-h0000-" in c for c in chunks)
  assert any("-h0001-" in c for c in chunks)


@pytest.mark.e2e
@pytest.mark.slow
def test_checkpoint_of_two_processes_resumes_in_one(runs):
  resumed = runs / "resumed"
  shutil.copytree(runs / "two", resumed)
  shutil.rmtree(resumed / "export")
  shutil.rmtree(resumed / "checkpoints" / str(STEPS))  # as if killed after step EVERY
  assert sorted(os.listdir(resumed / "checkpoints")) == [str(EVERY)]
  out = _one_process(resumed)
  assert f"resumed from" in out.stderr
  _assert_same_run(runs / "one", resumed)


def _lost_process(workdir, victim, step):
  """Runs 2 processes of which `victim` is SIGKILLed right after `step`; checks
  that the survivor names it in one line and exits within a bounded time.
  Returns the survivor's line."""
  survivor = 1 - victim
  start = time.monotonic()
  out = _two_processes(workdir, ["--config.train.async_checkpoint=false"],
                       fault=f"kill@after_step:{step}/p{victim}", ok=False)
  took = time.monotonic() - start
  logs = [os.path.join(workdir, f"process_{i}.log") for i in range(2)]
  assert f"[fault] SIGKILL at after_step:{step}" in open(logs[victim]).read(), _logs(workdir)
  # The victim's last words are the fault's; the survivor's are its one line.
  survived = os.path.getmtime(logs[survivor]) - os.path.getmtime(logs[victim])
  assert survived < HEARTBEAT + 30, (survived, took)
  lines = [l for l in open(logs[survivor]).read().splitlines() if l.startswith("error:")]
  who = f"process {victim} of 2" + (" (the coordinator)" if victim == 0 else "")
  assert len(lines) == 1 and lines[0].startswith(f"error: {who} stopped responding"), \
      _logs(workdir)
  assert "rerun the same command to resume" in lines[0]
  assert "Traceback" not in open(logs[survivor]).read()
  # local.sh names the process that failed first, then the survivor's line.
  assert f"error: process {victim} failed first (killed by SIGKILL)" in out.stderr, out.stderr
  assert f"error: process {survivor} failed too (exit status 3)" in out.stderr, out.stderr
  assert lines[0] in out.stderr
  return lines[0], survived


@pytest.mark.e2e
@pytest.mark.slow
def test_lost_worker_is_named_and_a_rerun_resumes(runs):
  workdir = runs / "lost_worker"
  line, _ = _lost_process(workdir, victim=1, step=EVERY + 1)
  # The survivor was in step 5, or still in step 4 if the victim died before the
  # collectives of its (asynchronously dispatched) step 4 had finished.
  assert re.search(rf"\(lost at step ~({EVERY + 1}|{EVERY + 2})\); the last checkpoint is "
                   rf"step {EVERY};", line), line
  _two_processes(workdir)  # the same command again
  assert "resumed from" in open(workdir / "process_0.log").read()
  _assert_same_run(runs / "two", workdir)


@pytest.mark.e2e
@pytest.mark.slow
def test_lost_coordinator_is_named(runs):
  """The coordinator (process 0, which hosts JAX's coordination service) killed:
  the survivor names it (its log holds jaxlib's own fatal message first; local.sh
  repeats only the line) with the checkpoint a rerun resumes from. The rerun
  itself is the lost worker's test: both processes wrote that checkpoint whoever
  died, so resuming it is the same (a second rerun here cost the suite ~40 s)."""
  workdir = runs / "lost_coordinator"
  line, _ = _lost_process(workdir, victim=0, step=EVERY + 1)
  assert re.search(rf"\(lost at step ~({EVERY + 1}|{EVERY + 2})\); the last checkpoint is "
                   rf"step {EVERY};", line), line
  ckpt = checkpoint_steps(workdir)
  assert EVERY in ckpt, ckpt


@pytest.mark.e2e
@pytest.mark.slow
def test_hung_worker_is_named_and_the_launcher_ends(runs, tmp_path):
  """A process that freezes (SIGSTOP: every thread of it, as on a frozen host)
  never answers again: the survivor names it after HEARTBEAT seconds of silence,
  and local.sh kills it once its grace period is over instead of waiting forever."""
  del runs  # only for its compiled programs in the shared cache
  workdir = tmp_path / "run"
  start = time.monotonic()
  out = _two_processes(workdir, ["--config.train.async_checkpoint=false"],
                       fault="stop@after_step:2/p1", ok=False)
  took = time.monotonic() - start
  assert "[fault] SIGSTOP at after_step:2" in open(workdir / "process_1.log").read()
  lines = [l for l in open(workdir / "process_0.log").read().splitlines()
           if l.startswith("error:")]
  assert len(lines) == 1 and lines[0].startswith("error: process 1 of 2 stopped responding"), \
      _logs(workdir)
  assert "error: process 0 failed first (exit status 3)" in out.stderr, out.stderr
  assert lines[0] in out.stderr
  assert (f"error: process 1 did not end within {HEARTBEAT + 15} s of the first failure "
          "(hung or stopped); killed it") in out.stderr, out.stderr
  assert took < 300, took


def _alone(process_id: int, timeout: int = 4):
  env = _env(1)
  env.update(ALIGNMENT_COORDINATOR=f"localhost:{20000 + os.getpid() % 20000}",
             ALIGNMENT_NUM_PROCESSES="2", ALIGNMENT_PROCESS_ID=str(process_id),
             ALIGNMENT_INIT_TIMEOUT=str(timeout))
  start = time.monotonic()
  out = subprocess.run([sys.executable, "-m", "alignment.main", "--config=configs/online.py:tiny",
                        "--workdir=/nonexistent/never-written"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
  return out, time.monotonic() - start


def test_unreachable_coordinator_is_a_clear_error_not_a_hang():
  out, took = _alone(1)
  assert out.returncode == 2, out.stderr[-2000:]
  assert "coordinator at localhost:" in out.stderr and "unreachable after 4 s" in out.stderr
  assert "Traceback" not in out.stderr and took < 60


def test_missing_process_is_a_clear_error_not_a_hang():
  out, took = _alone(0)
  assert out.returncode == 2, out.stderr[-2000:]
  assert "not every process joined the coordinator" in out.stderr
  assert "Traceback" not in out.stderr and took < 60
