"""python -m alignment.study --config=configs/study.py:<scale> --workdir=DIR [--plan [--peak=G]]

Runs the study (`runner.main`), or with --plan prints every stage it would run with its
estimated time and what is already done, and runs nothing (`plan`: the stages priced by
`estimate` with `alignment.study.cost`'s work model, printed by `render`).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from typing import Optional

from alignment import aot
from alignment import config as config_lib
from alignment.study import cost, runner
from alignment.study.plan import Planner
from alignment.study.stages import (Stage, code_digest, own_hash, read_marker, rerun_reason,
                                    stage_hashes)


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  if "--plan" in argv:
    return plan(argv)
  return runner.main(argv)


# -- --plan: the stages priced, and their table -------------------------------------
@dataclasses.dataclass
class Row:
  stage: Stage
  work: Optional[cost.Work]       # None: not priced (`why`)
  seconds: Optional[float]
  status: str                     # done | todo | rerun (a STAGE.json of another hash)
  took: Optional[float] = None    # a done stage's recorded seconds
  why: str = ""                   # not priced: why; rerun: why (`stages.rerun_reason`)
  convert: float = 0.0            # s more if this machine has not converted its records yet


def records_key(stage: Stage) -> Optional[tuple]:
  """The (task, seed, lengths) whose records a stage reads through the training iterator
  (`pipeline.load_records`, cached per machine once converted): SFT, online runs, and
  PM or offline runs on a task rather than a pair-set directory."""
  c = stage.config
  if c is None or stage.kind not in ("sft", "pm", "online", "offline") or \
      c.data.get("replay_dir", ""):
    return None
  return (c.data.task, int(c.data.shuffle_seed), int(c.data.prompt_len),
          int(c.data.response_len))


def is_tpu(study) -> bool:
  return study.get("scale", "") == "tpu" or study.get("base_variant", "") == "paper"


def estimate(study, workdir: str, peak: float, stages=None) -> list[Row]:
  """Every stage of the study's plan, in order, priced at `peak` GFLOP/s and marked done
  where `workdir` holds its STAGE.json with the hash the runner would compute."""
  if stages is None:
    stages = Planner(study, workdir).build()
  hashes = stage_hashes(stages, workdir)
  ctx = cost.Context(study, workdir, {st.name: st for st in stages})
  compiled, converted = set(), set()
  rows = []
  for st in stages:
    marker = read_marker(workdir, st.name)
    status = "todo" if marker is None else (
        "done" if marker.get("config_hash") == hashes[st.name] else "rerun")
    took = marker.get("seconds") if status == "done" else None
    why = ""
    if status == "rerun":  # what the runner will say when it reruns it
      why = rerun_reason(marker, {
          "own_hash": own_hash(st, workdir), "code": code_digest(),
          "dep_hashes": {d: (read_marker(workdir, d) or {}).get("config_hash")
                         for d in st.deps}})
    key = records_key(st)
    convert = 0.0
    if key is not None and key not in converted:
      converted.add(key)
      convert = cost.CONVERT_S.get(key[0], 0.0) * cost.CAL_PEAK / peak
    try:
      w = cost.WORK[st.kind](st, ctx)
    except cost.Unpriced as e:
      rows.append(Row(st, None, None, status, took, f"not priced: {e}", convert))
      continue
    first = w.compile_key not in compiled
    compiled.add(w.compile_key)
    rows.append(Row(st, w, w.seconds(peak, first), status, took, why, convert))
  return rows


def _to_criterion(stage: Stage) -> bool:
  """An SFT stage that stops when its held-out loss levels off (its steps are a cap)."""
  c = stage.config
  return c is not None and stage.kind == "sft" and int(
      c.get("criterion", {}).get("patience", 0) or 0) > 0


def _fmt_s(x: Optional[float]) -> str:
  return "?" if x is None else f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def _fmt_min(seconds: float) -> str:
  return f"{seconds / 60:,.1f} min" if seconds < 100 * 3600 else f"{seconds / 3600:,.0f} h"


def render(rows: list[Row], peak: float, peak_source: str, tpu: bool = False,
           header: str = "") -> str:
  width = max([len("stage")] + [len(r.stage.name) for r in rows])
  cols = f"{'#':>4}  {'stage':<{width}}  {'kind':<7} {'model':<8} {'steps':>6} {'est. s':>9}"
  if tpu:
    cols += f" {'chip-h':>9} {'GiB/chip':>9} {'fits':>4}"
  lines = ([header] if header else []) + [cols + "  status"]
  hbm = aot.HBM_GIB[cost.TPU_CHIP]
  for i, r in enumerate(rows, 1):
    w = r.work
    steps = "" if w is None or not w.steps else (
        f"<={w.steps}" if _to_criterion(r.stage) else str(w.steps))
    line = (f"{i:>4}  {r.stage.name:<{width}}  {r.stage.kind:<7} "
            f"{(w.model if w else '?'):<8} {steps:>6} {_fmt_s(r.seconds):>9}")
    if tpu:
      if w is None:
        line += f" {'?':>9} {'?':>9} {'?':>4}"
      else:
        gib = w.memory / 2**30
        fits = "" if not w.memory else "yes" if gib <= hbm else "NO"
        line += (f" {w.chip_hours():>9,.1f} {(f'{gib:.1f}' if w.memory else ''):>9} "
                 f"{fits:>4}")
    status = r.status
    if r.status == "done" and r.took is not None:
      status += f" (took {_fmt_s(float(r.took))} s)"
    if r.why:
      status += f": {r.why}"
    lines.append(line + "  " + status)
  priced = [r for r in rows if r.seconds is not None]
  if any(_to_criterion(r.stage) for r in rows):
    lines.append("<=: trained until its held-out loss levels off (sft.criterion), priced at "
                 "its cap: an upper bound")
  total = sum(r.seconds for r in priced)
  left = sum(r.seconds for r in priced if r.status != "done")
  done = sum(r.status == "done" for r in rows)
  lines.append(f"stages: {len(rows)}, {done} done, {len(rows) - done} to run"
               + (f", {len(rows) - len(priced)} not priced" if len(priced) < len(rows) else ""))
  lines.append(f"total: {_fmt_min(total)} ({_fmt_min(left)} still to run) at peak "
               f"{peak:.0f} GFLOP/s ({peak_source})")
  new = [r for r in rows if r.convert and r.status != "done"]
  if new:
    lines.append(f"  + up to {_fmt_min(sum(r.convert for r in new))} converting task records "
                 f"for {len(new)} (task, seed) this machine may not have met (measured: "
                 + ", ".join(f"{k} {v:.0f} s" for k, v in cost.CONVERT_S.items()) + ")")
  if tpu:
    ch = sum(r.work.chip_hours() for r in priced)
    ch_left = sum(r.work.chip_hours() for r in priced if r.status != "done")
    worst = max((r.work.memory for r in priced), default=0.0) / 2**30
    lines.append(f"chip-hours: {ch:,.0f} ({ch_left:,.0f} still to run) on a "
                 f"{cost.TPU_CHIPS}-chip {cost.TPU_CHIP} slice: the roofline bound x "
                 f"{cost.TPU_SLOWDOWN:g}, not measured on a TPU")
    lines.append(f"memory: a formula per chip (parameters, AdamW, gradient, reference, judge, "
                 f"activations or KV cache), largest {worst:.1f} GiB against {hbm:g} GiB HBM; "
                 "XLA's temporaries are not checked: python -m alignment.aot "
                 "--config=configs/<kind>.py:paper --topology=v4:4x4 compiles them")
  lines.append(
      f"estimate: per stage start-up + compilation + steps x (overhead + model FLOPs / "
      f"({cost.EFFICIENCY:g} x peak)) + evaluation points, calibrated on the default study's "
      f"stages (t5-tiny, 2026-12-06, {cost.CAL_PEAK:.0f} GFLOP/s): within "
      f"+-{cost.ACCURACY:.0%} of each of them, +-{cost.ACCURACY_RERUN:.0%} of their reruns; "
      "larger models extrapolated by FLOPs, unmeasured without load (alignment/study/cost.py)")
  return "\n".join(lines)


def measure_peak() -> float:
  """The float32 matmul peak now (GFLOP/s), as the benchmarks measure it."""
  from alignment.bench import measure  # pylint: disable=g-import-not-at-top
  return float(measure.matmul_peak()["gflops"])


def _peak_arg(text: Optional[str]) -> Optional[float]:
  if text is None:
    return None
  try:
    value = float(text)
  except ValueError:
    value = float("nan")
  if not math.isfinite(value) or value <= 0:
    raise config_lib.ConfigError(f"--peak={text}: give the float32 matmul peak in GFLOP/s, a "
                                 "positive number (e.g. --peak=213), or leave it out to "
                                 "measure it now")
  return value


def plan(argv=None) -> int:
  """`--plan`: prints the plan and its cost; returns 0 without running anything."""
  p = argparse.ArgumentParser(prog="python -m alignment.study",
                              description=cost.__doc__.split("\n\n")[0])
  p.add_argument("--config", required=True, help="configs/study.py:<scale>")
  p.add_argument("--workdir", required=True)
  p.add_argument("--plan", action="store_true", help="print the stages and their cost only")
  p.add_argument("--peak", default=None,
                 help="float32 matmul peak in GFLOP/s (default: measured now)")
  args, overrides = p.parse_known_args(sys.argv[1:] if argv is None else argv)
  try:
    peak = _peak_arg(args.peak)
    study = runner.load_study(args.config, overrides)
    source = "given by --peak"
    if peak is None:
      peak, source = measure_peak(), "measured now"
    rows = estimate(study, args.workdir, peak)
  except Exception as e:  # pylint: disable=broad-except
    return runner.error_exit(e)
  header = f"[plan] {args.config} in {args.workdir}: nothing runs"
  print(render(rows, peak, source, tpu=is_tpu(study), header=header), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
