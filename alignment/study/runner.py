"""Running a study: every stage not yet done, in order, then the report.

    python -m alignment.study --config=configs/study.py:default --workdir=runs/study

Killing the study at any point and rerunning the same command continues it; a
SIGTERM stops it after the running stage has saved a checkpoint, without marking
that stage done. The study holds <workdir>/LOCK.json and each stage's run its own
directory's (`alignment.lock`).
"""
from __future__ import annotations

import os
import sys
import time

from alignment import config as config_lib
from alignment import distributed, layout, lock
from alignment.study import foundation, report
from alignment.study.plan import Planner
from alignment.study.stages import Preempted, run_stage, stage_done, stage_hashes


def run(study, workdir: str) -> dict:
  """Runs (or continues) every stage, then writes results.json, report.md, plots."""
  with lock.held(workdir):  # each stage's run holds its own directory below it
    return _run_stages(study, workdir)


def _run_stages(study, workdir: str) -> dict:
  distributed.setup_host()
  _enable_compilation_cache(workdir)
  os.makedirs(workdir, exist_ok=True)
  planner = Planner(study, workdir)
  stages = planner.build()
  hashes = stage_hashes(stages, workdir)
  t0 = time.time()
  for i, stage in enumerate(stages):
    if stage_done(workdir, stage, hashes[stage.name]):
      print(f"[study] {i + 1}/{len(stages)} {stage.name}: done (cached)", flush=True)
      continue
    print(f"[study] {i + 1}/{len(stages)} {stage.name} ({stage.kind}) ... elapsed "
          f"{time.time() - t0:.0f}s", flush=True)
    info = run_stage(workdir, stage, hashes[stage.name])
    print(f"[study] {stage.name}: {info['seconds']:.0f}s", flush=True)
  return report.write(study, workdir, stages, foundation.golden_judge(planner),
                      planner.experiments)


def _enable_compilation_cache(workdir: str):
  """XLA's persistent cache: stages with the same shapes compile once per study.

  It lives in <workdir>/.xla_cache unless ALIGNMENT_XLA_CACHE names another
  directory (tests share one between studies).
  """
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update("jax_compilation_cache_dir", os.environ.get(
      "ALIGNMENT_XLA_CACHE", os.path.join(workdir, layout.XLA_CACHE)))
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
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--config", required=True, help="configs/study.py:<scale>")
  p.add_argument("--workdir", required=True)
  args, overrides = p.parse_known_args(argv)
  try:
    study = load_study(args.config, overrides)
    results = run(study, args.workdir)
  except Preempted as e:
    print(e, file=sys.stderr)
    return 0
  except Exception as e:  # pylint: disable=broad-except
    return error_exit(e)
  print(f"[study] wrote {results['report']}", flush=True)
  return 0
