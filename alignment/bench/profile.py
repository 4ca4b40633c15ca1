"""The profile benchmark: where the train benchmark's step spends its time.

The step is compiled as `bench train` compiles it, traced with `jax.profiler`,
and each traced HLO op's time summed per category (matmul, gather, scatter,
reduction, elementwise, copy/transpose, ...), with the matmul FLOPs the
optimised HLO holds.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import statistics
from typing import Any, Callable

import jax
import numpy as np

from alignment.bench.measure import Json, fmt, timed
from alignment.bench.torch_reference import untied_hf_t5
from alignment.bench.train import bench_pairs, our_train_step


_HLO_LINE = re.compile(r"^\s*(?:ROOT )?%(\S+) = (.*)$", re.M)
_HLO_COMPUTATION = re.compile(r"^(?:ENTRY )?%(\S+) \(.*?\) -> .*? \{\n(.*?)^\}", re.S | re.M)


def _hlo_dims(rhs: str) -> list[int]:
  m = re.match(r"\w+\[([^\]]*)\]", rhs)
  return [int(x) for x in m.group(1).split(",") if x] if m else []


def _dot_flops(rhs: str, operands: dict[str, str]) -> int:
  """2 x output elements x contracted size of one HLO `dot` (operands: name -> its rhs)."""
  lhs = re.search(r"dot\(%([^,)]+)", rhs).group(1)
  contracting = re.search(r"lhs_contracting_dims=\{([^}]*)\}", rhs).group(1)
  lhs_dims = _hlo_dims(operands.get(lhs, ""))
  if not lhs_dims:
    return 0
  k = int(np.prod([lhs_dims[int(i)] for i in contracting.split(",") if i]))
  return 2 * int(np.prod(_hlo_dims(rhs))) * k


def hlo_op_kinds(hlo_text: str) -> dict[str, tuple[str, int]]:
  """Instruction name -> (category, matmul FLOPs) for an optimised HLO module.

  A fusion that holds a dot is a matmul (XLA:CPU fuses dots with their
  operands' converts and bitcasts); others are gathers, scatters, reductions
  or elementwise; copies and transposes are layout moves.
  """
  bodies = {m.group(1): m.group(2) for m in _HLO_COMPUTATION.finditer(hlo_text)}
  everywhere = {m.group(1): m.group(2) for m in _HLO_LINE.finditer(hlo_text)}
  kinds = {}
  for name, rhs in everywhere.items():
    op = re.match(r"\S+ ([\w-]+)\(", rhs)
    op = op.group(1) if op else ""
    if op == "dot":
      kinds[name] = ("matmul", _dot_flops(rhs, everywhere))
    elif op == "fusion":
      body = bodies.get(re.search(r"calls=%([\w.\-]+)", rhs).group(1), "")
      lines = {m.group(1): m.group(2) for m in _HLO_LINE.finditer(body)}
      flops = sum(_dot_flops(r, lines) for r in lines.values() if re.match(r"\S+ dot\(", r))
      kinds[name] = ("matmul", flops) if flops else (
          ("scatter" if " scatter(" in body else "gather" if " gather(" in body else
           "reduction" if " reduce(" in body else "elementwise"), 0)
    elif op in ("copy", "transpose"):
      kinds[name] = ("copy/transpose", 0)
    else:
      kinds[name] = (op or "other", 0)
  return kinds


def library_fusions(hlo_text: str) -> dict[str, str]:
  """Instruction name -> library for every fusion XLA:CPU hands to a kernel library
  (`backend_config` fusion kind `__ynn_fusion`: YNNPACK, `__xnn_fusion`: XNNPACK,
  `__onednn_fusion`: oneDNN); the other fusions and dots are XLA's own emitted code."""
  names = {"__ynn_fusion": "YNNPACK", "__xnn_fusion": "XNNPACK", "__onednn_fusion": "oneDNN"}
  out = {}
  for name, rhs in ((m.group(1), m.group(2)) for m in _HLO_LINE.finditer(hlo_text)):
    kind = re.search(r'"fusion_config":\{"kind":"(__\w+)"', rhs)
    if kind and kind.group(1) in names and re.match(r"\S+ fusion\(", rhs):
      out[name] = names[kind.group(1)]
  return out


def op_profile(compiled, run: Callable[[], Any], steps: int, trace_dir: str) -> Json:
  """Time per op category of a compiled program over `steps` calls, from a jax.profiler trace.

  XLA:CPU records each executed HLO op as a trace event; op times are summed
  per category (ops of one step can run concurrently, so their sum may exceed
  the program's wall time, reported apart).
  """
  import glob  # pylint: disable=g-import-not-at-top
  import gzip  # pylint: disable=g-import-not-at-top
  text = compiled.as_text()
  kinds, library = hlo_op_kinds(text), library_fusions(text)
  jax.profiler.start_trace(trace_dir)
  for _ in range(steps):
    run()
  jax.profiler.stop_trace()
  path = sorted(glob.glob(os.path.join(trace_dir, "plugins/profile/*/*.trace.json.gz")))[-1]
  with gzip.open(path) as f:
    events = [e for e in json.load(f)["traceEvents"] if e.get("ph") == "X"]
  ms, gflop, by = {}, {}, {}
  for e in events:
    if e["name"] in kinds:
      kind, flops = kinds[e["name"]]
      ms[kind] = ms.get(kind, 0.0) + e["dur"] / 1e3 / steps
      gflop[kind] = gflop.get(kind, 0.0) + flops / 1e9 / steps
      if kind == "matmul":  # by who runs it: a kernel library's fusion, or XLA's code
        v = by.setdefault(library.get(e["name"], "XLA"), {"ms": 0.0, "gflop": 0.0, "ops": set()})
        v["ms"] += e["dur"] / 1e3 / steps
        v["gflop"] += flops / 1e9 / steps
        v["ops"].add(e["name"])
  for v in by.values():
    v["ops"] = len(v["ops"])
    v["gflops_while_running"] = v["gflop"] / v["ms"] * 1e3 if v["ms"] else None
  wall = sum(e["dur"] for e in events if e["name"] == "ThunkExecutor::Execute (wait for "
             "completion)") / 1e3 / steps
  total = sum(ms.values())
  dots = [rhs for rhs in re.findall(r"= (\S+) dot\(", text)]
  return {"program_wall_ms": wall, "op_ms": total, "trace": path,
          "dots_by_output_type": {t: sum(d.startswith(t + "[") for d in dots)
                                  for t in sorted({d.split("[")[0] for d in dots})},
          # Who runs the matmuls: a kernel library's fusions, or XLA's emitted code.
          "matmuls_by_runner": dict(sorted(by.items(), key=lambda kv: -kv[1]["ms"])),
          "categories": {k: {"ms": v, "share": v / total, "gflop": gflop[k],
                             "gflops_while_running": gflop[k] / v * 1e3 if gflop[k] else None}
                         for k, v in sorted(ms.items(), key=lambda kv: -kv[1])}}


def bench_profile(args) -> Json:
  """Where the train step's time goes: `bench train`'s step (ours), per op category.

  For each activation dtype the same step as `bench train` (same model, pairs
  and loss) is compiled, run, and traced for `steps` steps.
  """
  from alignment import config as config_lib  # pylint: disable=g-import-not-at-top
  from alignment import flops as flops_lib  # pylint: disable=g-import-not-at-top
  from alignment.models import convert, heads, zoo  # pylint: disable=g-import-not-at-top
  from alignment.train import steps as steps_lib  # pylint: disable=g-import-not-at-top

  b, lp, lr, beta = args.batch, args.prompt_len, args.response_len, 0.1
  hf = [untied_hf_t5(zoo.get(args.model), seed=s) for s in (0, 1)]
  cfg = convert.config_from_hf(hf[0].config.to_dict())
  policy, reference = (convert.params_from_hf(
      {k: v.detach().float().numpy().copy() for k, v in h.state_dict().items()}, cfg)
                       for h in hf)
  pairs = bench_pairs(cfg.vocab_size, b, lp, lr)
  opt_cfg = config_lib.optimizer_section()
  out = {}
  for dtype in args.dtypes:
    model = heads.LanguageModel(dataclasses.replace(cfg, dtype=dtype))
    run, _, compiled, _ = our_train_step(model, policy, reference, pairs, opt_cfg,
                                          steps_lib.alignment_loss_fn(model, "ipo", beta, "sum"))
    step_s = statistics.median(timed(run, args.steps))
    out[dtype] = dict(op_profile(compiled, run, args.steps, os.path.join(args.trace_dir, dtype)),
                      step_s=step_s)
  return {"settings": {"model": args.model, "pairs_per_batch": b, "prompt_len": lp,
                       "response_len": lr, "loss": "ipo", "steps": args.steps},
          "model_flops": flops_lib.alignment_step(cfg, b, lp, lr)["total"], "profiles": out}


def profile_args(p: argparse.ArgumentParser):
  p.add_argument("--model", default="t5-small", help="zoo T5 name")
  p.add_argument("--batch", type=int, default=8, help="preference pairs per step")
  p.add_argument("--prompt_len", type=int, default=64)
  p.add_argument("--response_len", type=int, default=32)
  p.add_argument("--dtypes", default="float32,bfloat16", type=lambda s: s.split(","),
                 help="activation dtypes to profile")
  p.add_argument("--steps", type=int, default=3, help="steps timed, then traced")
  p.add_argument("--trace_dir", default="/tmp/alignment_profile",
                 help="where jax.profiler writes its traces (TensorBoard/Perfetto)")


def profile_table(result: Json) -> str:
  s = result["settings"]
  rows = [f"{s['model']}, IPO, {s['pairs_per_batch']} pairs x ({s['prompt_len']} + 2 x "
          f"{s['response_len']}) tokens; op time per step from a jax.profiler trace of "
          f"{s['steps']} steps ({result['model_flops'] / 1e9:.1f} model GFLOP per step)\n"]
  for dtype, p in result["profiles"].items():
    rows += [f"\n{dtype} activations: step {p['step_s']:.3f} s timed, program "
             f"{p['program_wall_ms']:.0f} ms traced, op time {p['op_ms']:.0f} ms; HLO dots by "
             f"output type: {p['dots_by_output_type']}\n",
             "| op category | ms/step | share of op time | GFLOP | GFLOP/s while running |",
             "|---|---|---|---|---|"]
    for k, c in p["categories"].items():
      rows.append(f"| {k} | {c['ms']:.1f} | {c['share'] * 100:.1f}% | {c['gflop']:.1f} | "
                  f"{fmt(c['gflops_while_running'], 1, '.0f')} |")
    by = p.get("matmuls_by_runner", {})
    if by:
      rows.append("\nmatmuls by who runs them: " + "; ".join(
          f"{who} {v['ops']} ops, {v['ms']:.1f} ms, {v['gflop']:.1f} GFLOP, "
          f"{fmt(v['gflops_while_running'], 1, '.0f')} GFLOP/s while running"
          for who, v in by.items()))
  return "\n".join(rows)
