"""A study's unit of work: a Stage, its hash, and running one.

A stage is one directory under the study's workdir: an alignment run (kinds sft,
pm, online, offline, eval: run through `alignment.main.run`), or a pair set or a
given export (kinds pairs, given: made by the stage's own `generate`).

Caching: a finished stage writes STAGE.json with a hash of its config AND of the
hashes of the stages it depends on, so a changed SFT invalidates every stage
downstream and a rerun online stage its replays and pair sets. A rerun skips a
stage whose hash matches, resumes one without STAGE.json (from its
checkpoints), and redoes one whose hash changed from scratch.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from typing import Any, Callable, Optional

import numpy as np

from alignment import faults, files, layout
from alignment.train import bookkeeping

log = logging.getLogger("alignment.study")
KINDS = ("sft", "pm", "online", "offline", "eval", "pairs", "given")


class Preempted(Exception):
  """A stage's run stopped early after SIGTERM: the study stops, unmarked, to resume."""


@dataclasses.dataclass
class Stage:
  name: str
  kind: str                       # one of KINDS
  config: Any = None              # the experiment ConfigDict (kinds run by alignment.main)
  deps: tuple[str, ...] = ()
  run: Optional[dict] = None      # results.json fields of an alignment run
  generate: Optional[Callable[[str], dict]] = None  # pairs stages: fn(stage_dir) -> summary
  params: Optional[dict] = None   # what a pairs stage is made from (part of its hash)
  group: str = ""                 # the report section it belongs to (an experiment's)
  sft_eval: str = "sft_eval"      # the stage whose evaluation is this run's step-0 point
  arm: str = ""                   # runs of one arm differ only in their seed


_WORKDIR = "<workdir>"


def config_hash(stage: Stage, dep_hashes: tuple[str, ...] = (), workdir: str = "") -> str:
  """Hash of a stage's own config (or pair-set parameters) and of its dependencies'
  hashes: any change upstream changes it. Paths inside the study's workdir (an
  upstream stage's export, a pair set) count relative to it, so a study moved or
  copied elsewhere keeps its finished stages."""
  own = stage.config.to_json_best_effort(sort_keys=True) if stage.config is not None \
      else json.dumps({"kind": stage.kind, "params": stage.params}, sort_keys=True)
  if workdir:
    for prefix in sorted({workdir.rstrip("/"), _abspath(workdir)}, key=len, reverse=True):
      own = own.replace(prefix + "/", _WORKDIR + "/")
  payload = json.dumps({"own": own, "deps": list(dep_hashes)})
  return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _abspath(workdir: str) -> str:
  return workdir.rstrip("/") if "://" in workdir else os.path.abspath(workdir)


def stage_hashes(stages: list[Stage], workdir: str = "") -> dict[str, str]:
  """Every stage's hash, dependencies first (stages are planned in dependency order);
  `workdir`: the study's, whose paths count relative to it (`config_hash`)."""
  hashes: dict[str, str] = {}
  for st in stages:
    hashes[st.name] = config_hash(st, tuple(hashes[d] for d in st.deps), workdir)
  return hashes


def read_marker(workdir: str, name: str) -> Optional[dict]:
  """A finished stage's STAGE.json (None while it is not finished)."""
  path = layout.stage_marker(workdir, name)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def stage_done(workdir: str, stage: Stage, stage_hash: str) -> bool:
  info = read_marker(workdir, stage.name)
  return info is not None and info.get("config_hash") == stage_hash


def stage_summary(workdir: str, name: str) -> Optional[dict]:
  """What a finished stage recorded of itself (a pair set's counts, a run's summary)."""
  return (read_marker(workdir, name) or {}).get("summary")


def run_stage(workdir: str, stage: Stage, stage_hash: str) -> dict:
  """Runs one stage in its directory and marks it done (STAGE.json) when it finished."""
  from alignment import main as main_lib  # pylint: disable=g-import-not-at-top
  stage_dir = layout.stage(workdir, stage.name)
  marker = layout.stage_marker(workdir, stage.name)
  if os.path.exists(marker):  # finished with another config or upstream: start over
    log.warning("stage %s: its config or an upstream stage changed; running it again",
                stage.name)
    shutil.rmtree(stage_dir)
  os.makedirs(stage_dir, exist_ok=True)
  start = time.time()
  if stage.kind in ("pairs", "given"):
    summary = stage.generate(stage_dir)
  else:
    summary = main_lib.run(stage.config, stage_dir) or {}
    if bookkeeping.preempted():  # stopped early: its checkpoint is saved, it is not done
      raise Preempted(f"[study] stopped after SIGTERM in stage {stage.name} (its checkpoint "
                      "is saved); rerun the same command to continue")
    if stage.kind == "eval":
      summary = {"points": summary.get("points", [])}
  faults.hit("after_stage", stage.name)
  info = {"stage": stage.name, "kind": stage.kind, "config_hash": stage_hash,
          "deps": list(stage.deps), "seconds": round(time.time() - start, 1),
          "summary": _jsonable(summary)}
  if stage.config is not None:
    info["config"] = json.loads(stage.config.to_json_best_effort())
  if stage.params is not None:
    info["params"] = stage.params
  files.write_json(marker, info)
  return info


def _jsonable(x):
  return json.loads(json.dumps(x, default=lambda o: float(o) if np.isscalar(o) else str(o)))
