"""Where things lie in a run's and a study's working directory, named once.

A RUN (`python -m alignment.main ... --workdir=RUN`, and every stage of a study):

    RUN/metrics.jsonl          one JSON record per logged step and per evaluation
    RUN/tb/                    the same records as TensorBoard summaries
    RUN/checkpoints/           orbax checkpoints (state, data iterator, RNG)
    RUN/export/                the trained params and their model config (`checkpoint`)
    RUN/stream/                D_online: every judged pair of an online run (`data.stream`)
    RUN/eval/step_N.npz        the per-item arrays behind the evaluation at step N
    RUN/eval/step_N/           the policy at step N, where the run saves it (eval.save_params)
    RUN/evaluation.json        the points of an `eval` experiment
    RUN/LOCK.json              one writer at a time (`lock`)

A STUDY (`python -m alignment.study ... --workdir=STUDY`): one run directory per
stage, STUDY/<stage>/, each marked done by STUDY/<stage>/STAGE.json; then
STUDY/results.json, STUDY/report.md and the plots, written together; the XLA
compilation cache in STUDY/.xla_cache (unless ALIGNMENT_XLA_CACHE names another).
"""
from __future__ import annotations

import os

METRICS = "metrics.jsonl"
TB = "tb"
CHECKPOINTS = "checkpoints"
EXPORT = "export"
STREAM = "stream"
EVAL = "eval"
EVALUATION = "evaluation.json"
LOCK = "LOCK.json"

STAGE = "STAGE.json"
RESULTS = "results.json"
REPORT = "report.md"
STAGE_SECONDS = "stage_seconds.json"  # where the stage time went (report.stage_seconds)
XLA_CACHE = ".xla_cache"


def metrics(run: str) -> str:
  return os.path.join(run, METRICS)


def tensorboard(run: str) -> str:
  return os.path.join(run, TB)


def checkpoints(run: str) -> str:
  return os.path.join(run, CHECKPOINTS)


def export(run: str) -> str:
  return os.path.join(run, EXPORT)


def stream(run: str) -> str:
  return os.path.join(run, STREAM)


def evaluation(run: str) -> str:
  return os.path.join(run, EVALUATION)


def eval_dir(run: str) -> str:
  return os.path.join(run, EVAL)


def eval_arrays(run: str, step: int) -> str:
  """The per-item arrays of the evaluation at `step`."""
  return os.path.join(run, EVAL, f"step_{step:06d}.npz")


def eval_policy(run: str, step: int) -> str:
  """The policy's export saved by the evaluation at `step` (eval.save_params)."""
  return os.path.join(run, EVAL, f"step_{step:06d}")


def stage(study: str, name: str) -> str:
  """A study stage's run directory."""
  return os.path.join(study, name)


def stage_marker(study: str, name: str) -> str:
  """The file that marks a stage done (its config hash, summary and seconds)."""
  return os.path.join(study, name, STAGE)
