"""A study's unit of work: a Stage, its hash, and running one.

A stage is one directory under the study's workdir: an alignment run (kinds sft,
pm, online, offline, eval: run through `alignment.main.run`), or a pair set or a
given export (kinds pairs, given: made by the stage's own `generate`).

Caching: a finished stage writes STAGE.json with a hash of its config, of the
code that produced it (`code_digest`) AND of the hashes of the stages it
depends on, so a changed SFT invalidates every stage downstream, a rerun online
stage its replays and pair sets, and a fixed loss or sampler every stage. A
rerun skips a stage whose hash matches, resumes one without STAGE.json (from
its checkpoints), and redoes one whose hash changed from scratch, saying why.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import time
from typing import Any, Callable, Optional

import numpy as np

from alignment import distributed, faults, files, layout, timing
from alignment.train import bookkeeping

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
  # Alignment-run stages: fn(workdir) -> {"overrides": {key: value}, ...}, what the config
  # takes from finished upstream stages (a rate search's choice, alignment.study.rate_search),
  # applied when the stage runs and recorded in STAGE.json as "resolved". Its inputs are
  # `params` (hashed) and the dependencies' hashes.
  resolve: Optional[Callable[[str], dict]] = None


_WORKDIR = "<workdir>"

# The source a stage runs, relative to the repository root: the package's Python
# files, its shipped vocabulary model and the experiment configs ...
_PACKAGE, _CONFIGS, _ASSETS = "alignment/", "configs/", "alignment/data/assets/"
# ... less the modules no stage runs: they read finished stages and write the report
# (report, plots, the runner that drives the stages), or are tools (bench, aot, the zoo's
# table, the Hugging Face export, the study's --plan cost). tests/study/test_study_rules.py
# checks that no stage's code imports one. arms.py stays in: the peak_pairs stage picks its
# policy step with `arms.run_points`.
CODE_EXCLUDED = ("alignment/study/report.py", "alignment/study/plots.py",
                 "alignment/study/runner.py", "alignment/study/cost.py",
                 "alignment/study/__main__.py", "alignment/bench/",
                 "alignment/aot.py", "alignment/zoo.py", "alignment/models/export.py",
                 "alignment/flops.py")  # FLOP counts: read by --plan and the benchmarks only
_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_DIGEST: dict[str, str] = {}  # the repository's digest, computed once per process


def code_digest(root: Optional[str] = None) -> str:
  """sha256 (hex) of the code a stage runs, so a fixed loss or sampler reruns the study.

  Covered: every alignment/**/*.py, alignment/data/assets/* (the shipped vocabulary)
  and configs/*.py under `root` (default: this checkout), as sorted relative paths
  and file bytes, plus the package version (setup.py's). Not covered: CODE_EXCLUDED,
  so that editing the report or a tool does not retrain every stage; the installed
  libraries (jax, flax, ...); a user's experiment module outside the package; gin
  files (a stage's config is hashed as it resolved). The default root's digest is
  computed once per process: a study's stages all see the code it started with.
  """
  if root is None:
    if _REPO not in _DIGEST:
      _DIGEST[_REPO] = _digest(_REPO)
    return _DIGEST[_REPO]
  if not isinstance(root, (str, os.PathLike)) or not os.path.isdir(
      os.path.join(root, _PACKAGE)):
    raise ValueError(f"code_digest: {str(root)!r} is not a directory holding the "
                     f"{_PACKAGE} package")
  return _digest(os.fspath(root))


def _digest(root: str) -> str:
  h = hashlib.sha256(f"version\0{package_version(root)}\0".encode())
  for rel in _covered_files(root):
    with open(os.path.join(root, rel), "rb") as f:
      data = f.read()
    h.update(f"{rel}\0{len(data)}\0".encode())
    h.update(data)
  return h.hexdigest()


def _covered_files(root: str) -> list[str]:
  """The covered files' paths relative to `root` ("/"-separated), sorted."""
  out = []
  for top in (_PACKAGE, _CONFIGS):
    for dirpath, dirnames, names in os.walk(os.path.join(root, top)):
      dirnames[:] = [d for d in dirnames if d != "__pycache__" and not d.startswith(".")]
      for name in names:
        rel = os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/")
        if _is_covered(rel):
          out.append(rel)
  return sorted(out)


def _is_covered(rel: str) -> bool:
  if rel.startswith(CODE_EXCLUDED):
    return False
  if rel.startswith(_ASSETS):
    return True
  if rel.startswith(_CONFIGS):
    return rel.endswith(".py") and rel.count("/") == 1  # not configs/gin/
  return rel.endswith(".py")


def package_version(root: str = _REPO) -> str:
  """setup.py's version under `root` ("" where there is none, as in an installed copy)."""
  try:
    with open(os.path.join(root, "setup.py"), encoding="utf-8") as f:
      found = re.search(r"""\bversion\s*=\s*["']([^"']+)["']""", f.read())
  except OSError:
    return ""
  return found.group(1) if found else ""


def _own(stage: Stage, workdir: str) -> str:
  """A stage's own config (or pair-set parameters) as JSON, its workdir's paths relative."""
  own = stage.config.to_json_best_effort(sort_keys=True) if stage.config is not None \
      else json.dumps({"kind": stage.kind, "params": stage.params}, sort_keys=True)
  if stage.config is not None and stage.params is not None:  # what its `resolve` reads
    own = json.dumps({"config": own, "params": stage.params}, sort_keys=True)
  if workdir:
    for prefix in sorted({workdir.rstrip("/"), _abspath(workdir)}, key=len, reverse=True):
      own = own.replace(prefix + "/", _WORKDIR + "/")
  return own


def own_hash(stage: Stage, workdir: str = "") -> str:
  """Hash of a stage's own config alone: what STAGE.json records to tell, on a rerun,
  a changed config from a changed upstream stage or code."""
  return hashlib.sha256(_own(stage, workdir).encode()).hexdigest()[:16]


def config_hash(stage: Stage, dep_hashes: tuple[str, ...] = (), workdir: str = "") -> str:
  """Hash of a stage's own config (or pair-set parameters), of the code (`code_digest`)
  and of its dependencies' hashes: any change upstream changes it. Paths inside the
  study's workdir (an upstream stage's export, a pair set) count relative to it, so a
  study moved or copied elsewhere keeps its finished stages."""
  payload = json.dumps({"own": _own(stage, workdir), "deps": list(dep_hashes),
                        "code": code_digest()})
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


def held_out_loss(workdir: str, name: str) -> Optional[float]:
  """A finished training stage's last held-out loss (its summary's eval/loss), None if
  the stage has not finished or recorded none."""
  got = (stage_summary(workdir, name) or {}).get("eval/loss")
  return None if got is None else float(got)


def run_stage(workdir: str, stage: Stage, stage_hash: str) -> dict:
  """Runs one stage in its directory and marks it done (STAGE.json) when it finished.

  STAGE.json records, beside the hash, what went into it (own_hash, code, dep_hashes:
  the dependencies' hashes as their STAGE.json have them) so that a rerun can say
  which changed (`rerun_reason`), in one `[study]` line.

  In a multi-process study every process calls this for the same stage: process 0
  alone reads and writes the study's own files (STAGE.json, the clean-up of a stage
  that changed) and makes a pair set or given stage (`generate`, on its own devices)
  while the others wait; an alignment run runs on every process (`alignment.main.run`,
  the loops' sharded programs), and is marked once it returned on every process."""
  from alignment import main as main_lib  # pylint: disable=g-import-not-at-top
  stage_dir = layout.stage(workdir, stage.name)
  marker = layout.stage_marker(workdir, stage.name)
  now = distributed.on_main(f"stage {stage.name} (start)",
                            lambda: _start(workdir, stage, stage_dir))
  start = time.time()
  timing.reset()
  if stage.kind in ("pairs", "given"):
    summary = distributed.on_main(f"stage {stage.name}", lambda: stage.generate(stage_dir))
    faults.hit("after_stage", stage.name)
  else:
    config, resolved = _resolved(workdir, stage)
    summary = main_lib.run(config, stage_dir) or {}
    faults.hit("after_stage", stage.name)
    # Every process has returned from the run here: a process whose loop stopped
    # after SIGTERM stops every process's study.
    if any(distributed.gather(f"stage {stage.name} (end)", bookkeeping.preempted())):
      raise Preempted(f"[study] stopped after SIGTERM in stage {stage.name} (its checkpoint "
                      "is saved); rerun the same command to continue")
    if stage.kind == "eval":
      summary = {"points": summary.get("points", [])}
  info = {"stage": stage.name, "kind": stage.kind, "config_hash": stage_hash, **(now or {}),
          "version": package_version(), "deps": list(stage.deps),
          "seconds": round(time.time() - start, 1), "summary": _jsonable(summary)}
  info["seconds_by_phase"] = timing.split(time.time() - start)  # process 0's (alignment.timing)
  if stage.config is not None:
    info["config"] = json.loads(config.to_json_best_effort())
  if stage.resolve is not None:
    info["resolved"] = resolved
  if stage.params is not None:
    info["params"] = stage.params
  distributed.on_main(f"stage {stage.name} (mark)", lambda: files.write_json(marker, info))
  return info


def _resolved(workdir: str, stage: Stage):
  """(the config a stage runs, what its `resolve` chose or None): process 0 resolves
  from the finished upstream stages, every process applies its answer."""
  if stage.resolve is None:
    return stage.config, None
  from alignment import config as config_lib  # pylint: disable=g-import-not-at-top
  chosen = distributed.broadcast(f"stage {stage.name} (resolve)",
                                 stage.resolve(workdir) if distributed.is_main() else None)
  config = stage.config.copy_and_resolve_references()
  for key, value in chosen["overrides"].items():
    config_lib.set_key(config, key, value, f"study stage {stage.name} (resolved)")
  detail = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in chosen["overrides"].items())
  if distributed.is_main():
    why = {k: v for k, v in chosen.items() if k not in ("overrides", "rule")}
    print(f"[study] {stage.name}: {detail} ({json.dumps(why)})", flush=True)
  return config, chosen


def _start(workdir: str, stage: Stage, stage_dir: str) -> dict:
  """Readies a stage's directory (cleared when it finished with another config,
  upstream or code); returns what STAGE.json will record of its inputs."""
  now = {"own_hash": own_hash(stage, workdir), "code": code_digest(),
         "dep_hashes": {d: (read_marker(workdir, d) or {}).get("config_hash")
                        for d in stage.deps}}
  old = read_marker(workdir, stage.name)
  if old is not None:  # finished with another config, upstream or code: start over
    print(f"[study] stage {stage.name}: running it again: {rerun_reason(old, now)}",
          flush=True)
    shutil.rmtree(stage_dir)
  os.makedirs(stage_dir, exist_ok=True)
  return now


def rerun_reason(old: dict, now: dict) -> str:
  """Why a finished stage runs again: its own config, the code, or (named) upstream
  stages changed, from its STAGE.json (`old`) and what it is now (`now`: own_hash,
  code, dep_hashes). Upstream stages go unnamed when the code changed: every stage's
  hash changed with it. A STAGE.json from before the code was hashed records no
  digest: such a study reruns once."""
  if not isinstance(old, dict) or not isinstance(now, dict):
    raise ValueError("rerun_reason: give STAGE.json's fields and the stage's as dicts")
  reasons = []
  if old.get("own_hash") is not None and old["own_hash"] != now.get("own_hash"):
    reasons.append("its own config changed")
  was, code = old.get("code"), now.get("code") or ""
  if was != code:
    reasons.append(f"the code changed (digest {was[:8]} -> {code[:8]})" if was else
                   f"the code changed (its STAGE.json records no code digest; now "
                   f"{code[:8]})")
  else:
    before = old.get("dep_hashes") or {}
    upstream = [d for d, h in (now.get("dep_hashes") or {}).items() if before.get(d) != h]
    if upstream:
      reasons.append(f"upstream stage{'s' * (len(upstream) > 1)} {', '.join(upstream)} "
                     "changed")
  return "; ".join(reasons) or "its recorded hash differs"


def _jsonable(x):
  return json.loads(json.dumps(x, default=lambda o: float(o) if np.isscalar(o) else str(o)))
