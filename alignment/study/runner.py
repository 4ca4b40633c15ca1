"""Running a study: every stage not yet done, in order, then the report.

    python -m alignment.study --config=configs/study.py:default --workdir=runs/study

Killing the study at any point and rerunning the same command continues it; a
SIGTERM stops it after the running stage has saved a checkpoint, without marking
that stage done. The study holds <workdir>/LOCK.json and each stage's run its own
directory's (`alignment.lock`).

Several processes (`launch/local.sh N D` with MODULE=alignment.study, or every
worker of a TPU slice) run one study together, as `alignment.main` runs one
experiment: every process plans the same stages (checked: their hashes must
agree) and runs each alignment stage together; process 0 alone decides from the
workdir's files what is done, takes the lock, makes the pair sets and writes the
markers and the report while the others wait (`distributed.on_main`). A process
lost mid-stage is named by the others, which exit (status 3); rerunning the same
launch continues from the markers and the running stage's checkpoints.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time

from alignment import config as config_lib
from alignment import distributed, layout, lock
from alignment.study import foundation, report
from alignment.study.plan import Planner
from alignment.study.stages import Preempted, run_stage, stage_done, stage_hashes


def run(study, workdir: str) -> dict:
  """Runs (or continues) every stage, then writes results.json, report.md, plots.
  Returns what the report wrote; in a multi-process study, on process 0 (the others
  return {})."""
  with _held(workdir):  # each stage's run holds its own directory below it
    return _run_stages(study, workdir)


@contextlib.contextmanager
def _held(workdir: str):
  """The study's lock for the block. Process 0 alone takes it (`lock.acquire`); when
  it is refused, every process of a multi-process study stops with the same line."""
  with contextlib.ExitStack() as stack:
    refused = None
    try:
      stack.enter_context(lock.held(workdir))
    except lock.LockError as e:
      refused = e
    line = distributed.broadcast("study lock", refused and str(refused))
    if line:
      _leave_together()
      raise refused or lock.LockError(line)
    yield


def _leave_together():
  """Before an error that every process raises at the same point: they leave the job
  together (JAX's shutdown barrier), so that the coordinator's exit (process 0's)
  cannot abort another while it reports the error."""
  distributed.finished()


def _run_stages(study, workdir: str) -> dict:
  distributed.setup_host()
  _enable_compilation_cache(workdir)
  os.makedirs(workdir, exist_ok=True)
  planner = Planner(study, workdir)
  stages = planner.build()
  hashes = stage_hashes(stages, workdir)
  _same_plan(stages, hashes)
  say = print if distributed.is_main() else lambda *a, **k: None
  t0 = time.time()
  for i, stage in enumerate(stages):
    # Process 0 reads the markers; every process follows it: one that skipped a stage
    # the others run would leave their collectives waiting forever.
    if distributed.broadcast(f"stage {stage.name} (done?)", distributed.is_main() and
                             stage_done(workdir, stage, hashes[stage.name])):
      say(f"[study] {i + 1}/{len(stages)} {stage.name}: done (cached)", flush=True)
      continue
    say(f"[study] {i + 1}/{len(stages)} {stage.name} ({stage.kind}) ... elapsed "
        f"{time.time() - t0:.0f}s", flush=True)
    info = run_stage(workdir, stage, hashes[stage.name])
    say(f"[study] {stage.name}: {info['seconds']:.0f}s", flush=True)
  return distributed.on_main("report", lambda: report.write(
      study, workdir, stages, foundation.golden_judge(planner), planner.experiments)) or {}


def _same_plan(stages, hashes: dict) -> None:
  """Every process must plan the same stages with the same hashes (the same code
  and config on every host); a DistributedError on every process if not."""
  mine = hashlib.sha256(json.dumps([[st.name, hashes[st.name]] for st in stages]).encode())
  plans = distributed.gather("study plan", mine.hexdigest())
  other = [i for i, plan in enumerate(plans) if plan != plans[0]]
  if other:
    _leave_together()
    raise distributed.DistributedError(
        f"processes {other} planned other stages than process 0 (their stages or hashes "
        "differ): install the same code on every host and give every process the same "
        "flags")


_MIN_COMPILE_ENV = "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"


def _enable_compilation_cache(workdir: str):
  """XLA's persistent cache: stages with the same shapes compile once per study.

  It lives in <workdir>/.xla_cache unless ALIGNMENT_XLA_CACHE names another
  directory (tests share one between studies). Programs that compile in under
  0.5 s are not kept, unless JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS says
  otherwise (the tests keep every program: a study restarted 20 times in a
  preemption storm compiles each once).
  """
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update("jax_compilation_cache_dir", os.environ.get(
      "ALIGNMENT_XLA_CACHE", os.path.join(workdir, layout.XLA_CACHE)))
  if _MIN_COMPILE_ENV not in os.environ:
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def load_study(spec: str, overrides: list[str]):
  """The study config `spec` (configs/study.py:<scale>) with its --config.* overrides; any
  other argument is an error (`--plan` and `--peak` go to `alignment.study.cost`)."""
  study = config_lib.load(spec)
  config_lib.apply_overrides(study, [o[len("--config."):] for o in overrides
                                     if o.startswith("--config.")], where="--config")
  bad = [o for o in overrides if not o.startswith("--config.")]
  if bad:
    raise config_lib.ConfigError(f"unknown arguments {bad}")
  return study


def error_exit(e: Exception) -> int:
  """A user's error (`alignment.main.error_line`) as one line on stderr, exit status 2;
  anything else is raised again. The study's command and its --plan share it."""
  from alignment import main as main_lib  # pylint: disable=g-import-not-at-top
  line = main_lib.error_line(e)
  if line is None:
    raise e
  print(line, file=sys.stderr)
  return 2


def main(argv=None) -> int:
  import argparse  # pylint: disable=g-import-not-at-top
  from alignment import main as main_lib  # pylint: disable=g-import-not-at-top
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--config", required=True, help="configs/study.py:<scale>")
  p.add_argument("--workdir", required=True)
  args, overrides = p.parse_known_args(argv)
  try:
    distributed.initialize()  # a no-op unless ALIGNMENT_* is set or on a TPU VM
    study = load_study(args.config, overrides)
    results = run(study, args.workdir)
  except distributed.MainFailed as e:  # process 0 said why; its log has the details
    print(f"error: {e}", file=sys.stderr)
    distributed.leave()
    return 2
  except distributed.DistributedError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except Preempted as e:  # every process stopped after the same stage
    print(e, file=sys.stderr)
    distributed.finished()
    return 0
  except Exception as e:  # pylint: disable=broad-except
    if main_lib.error_line(e) is None:
      distributed.wait_for_lost_peer()  # a dead peer's broken collective: name the peer
    return error_exit(e)
  if results:
    print(f"[study] wrote {results['report']}", flush=True)
  distributed.finished()
  return 0
