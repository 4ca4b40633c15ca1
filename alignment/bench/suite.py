"""`python -m alignment.bench all --json=DIR_OR_FILE [--quick]`: every benchmark, one table.

Runs every registered benchmark in one process, one after another, with sizes
chosen for the device (`flags_for`), after measuring the device's matmul peaks
and copy bandwidth once (handed to the benchmarks that use them, so they are not
measured again). A benchmark that fails is recorded with its one-line reason and
the others still run. At the end it prints one table (benchmark, what is timed,
median seconds, MFU against the peak for the dtype used, MBU against the
bandwidth, the peak and where it came from: `peaks.py`'s table of vendor figures
on a known accelerator, measured otherwise) and writes one JSON holding every
benchmark's full result (what `python -m alignment.bench <name>` writes) and the
table's rows. Exit status 1 if any benchmark failed.

Sizes. On CPU, `--quick` runs the toy sizes tests/tools/test_bench.py runs
(seconds per benchmark; the compiled PyTorch and HF baselines with torch.compile's
"eager" backend, which captures the graphs without inductor's minutes of code
generation). On an accelerator, `--quick` runs t5-small (sampler, train, online)
and t5-base (profile) at batches of 32 to 128 rows, chosen so that the device's
matmuls are large enough for MFU to mean something while the PyTorch / Hugging
Face baselines, which run on the host's CPU, stay within about a minute each
(eager only: compiling them takes minutes); the whole call is meant to fit 8
minutes, an estimate not yet measured on a real accelerator. Without `--quick`:
each benchmark's defaults.
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from typing import Callable

import jax

from alignment import files
from alignment.bench import peaks as peaks_lib
from alignment.bench.measure import Json, fmt, machine_info

# The toy sizes the tests run (tests/tools/test_bench.py reads `bench all --quick`).
QUICK_CPU = {
    "sampler": ["--models=t5-nano", "--batch=4", "--prompt_len=5", "--new_tokens=3",
                "--repeats=1", "--hf_threads=1", "--cache_dtypes=float32",
                "--compile_backend=eager"],
    "train": ["--model=t5-nano", "--batch=2", "--prompt_len=6", "--response_len=4",
              "--repeats=1", "--torch_threads=1", "--compile_backend=eager",
              "--xla_option=xnn:xla_cpu_experimental_xnn_fusion_type=LIBRARY_FUSION_TYPE_DOT"],
    "online": ["--config=configs/online.py:tiny", "--pm_config=configs/pm.py:tiny",
               "--warmup=1", "--repeats=1", "--staleness=1", "--blocks=1"],
    "profile": ["--model=t5-nano", "--batch=2", "--prompt_len=6", "--response_len=4",
                "--steps=1", "--dtypes=float32"],
    "families": ["--rungs=nano", "--batch=2", "--prompt_len=6", "--response_len=4",
                 "--repeats=2", "--online_repeats=1"],
}


def _quick_accelerator(cpus: int) -> dict[str, list[str]]:
  """Sizes for one GPU or TPU chip (module docstring); unmeasured on one so far."""
  return {
      # 128 rows x 64 new tokens of t5-small: a decode step reads ~0.6 GB of weights
      # and caches (float32), enough to show MBU; HF generate on the host's cores is the slow part.
      "sampler": ["--models=t5-small", "--batch=128", "--prompt_len=64", "--new_tokens=64",
                  "--repeats=3", f"--hf_threads={cpus}", "--cache_dtypes=float32,bfloat16",
                  "--no-hf_compile"],
      # 32 pairs x 128 tokens of t5-small: ~1 model TFLOP a step; PyTorch's on the host CPU.
      "train": ["--model=t5-small", "--batch=32", "--prompt_len=64", "--response_len=32",
                "--repeats=5", f"--torch_threads={cpus}", "--no-torch_compile"],
      # The tests' tiny task (quick to build on a bare machine), a t5-small policy.
      "online": ["--config=configs/online.py:tiny", "--pm_config=configs/pm.py:default",
                 "--set", "model.name='t5-small'", "--set", "data.batch_size=64",
                 "--warmup=2", "--repeats=5", "--staleness=1", "--blocks=1"],
      # No PyTorch step here: t5-base, 32 pairs x 256 tokens (~7.5 model TFLOP), both dtypes.
      "profile": ["--model=t5-base", "--batch=32", "--prompt_len=128", "--response_len=64",
                  "--steps=3", "--dtypes=float32,bfloat16"],
      "families": ["--batch=32", "--repeats=10", "--online_repeats=3"],
  }


def flags_for(platform: str, quick: bool, out_dir: str) -> dict[str, list[str]]:
  """Each benchmark's flags on this platform: the toy sizes (CPU), the accelerator's,
  or the defaults (not quick); the profile's trace beside the JSON."""
  if not quick:
    flags = {name: [] for name in QUICK_CPU}
  elif platform == "cpu":
    flags = {k: list(v) for k, v in QUICK_CPU.items()}
  else:
    flags = _quick_accelerator(os.cpu_count() or 1)
  flags["profile"] = flags["profile"] + [f"--trace_dir={os.path.join(out_dir, 'profile_trace')}"]
  return flags


def _one_line(e: BaseException) -> str:
  text = str(e).strip().splitlines()
  return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


def run_all(args, benchmarks: dict, run_one: Callable[[str, argparse.Namespace, list], Json],
            argv: list[str]) -> int:
  """Every benchmark in `benchmarks` (or `args.only`) in turn; one JSON, one table."""
  device = jax.devices()[0]
  platform, kind = device.platform, device.device_kind
  path = args.json if args.json.endswith(".json") else os.path.join(args.json, "all.json")
  names = [n for n in args.only.split(",") if n] if args.only else list(benchmarks)
  for n in names:
    if n not in benchmarks:
      raise SystemExit(f"bench all --only: unknown benchmark {n!r}; choose from "
                       f"{', '.join(benchmarks)}")
  out_dir = os.path.dirname(os.path.abspath(path))
  os.makedirs(out_dir, exist_ok=True)
  flags = flags_for(platform, args.quick, out_dir)
  start = time.perf_counter()
  print(f"bench all: {len(names)} benchmarks on {kind} ({platform}), "
        f"{'--quick' if args.quick else 'default'} sizes", flush=True)
  # --quick on CPU (the tests' toy sizes, whose figures only show that all runs): a
  # 128 MiB copy (4x the test machine's L3) and 3 matmul repeats, not 512 MiB and 10.
  toy = args.quick and platform == "cpu"
  measured = peaks_lib.measure_peaks(platform, *((128, 3) if toy else (512, 10)))
  peaks = peaks_lib.device_peaks(kind, platform, measured)
  print(f"  peaks measured ({time.perf_counter() - start:.0f} s); {peaks['note']}", flush=True)
  results: dict[str, Json] = {}
  for i, name in enumerate(names, 1):
    print(f"[{i}/{len(names)}] {name} {' '.join(flags[name])}", flush=True)
    t0 = time.perf_counter()
    try:
      parser = argparse.ArgumentParser(prog=f"python -m alignment.bench {name}")
      benchmarks[name][0](parser)
      try:
        bench_args = parser.parse_args(flags[name])
      except SystemExit:  # argparse printed the usage: this benchmark fails, not the run
        raise ValueError(f"flags rejected by its parser: {' '.join(flags[name])}") from None
      bench_args.measured = measured  # up-front peaks, not measured again
      results[name] = dict(run_one(name, bench_args, flags[name]), status="ok")
    except Exception as e:  # pylint: disable=broad-except  # recorded; the others still run
      results[name] = {"benchmark": name, "argv": flags[name], "status": "failed",
                       "reason": _one_line(e)}
    results[name]["seconds"] = time.perf_counter() - t0
    r = results[name]
    print(f"[{i}/{len(names)}] {name}: {r['status']} in {r['seconds']:.0f} s "
          f"({time.perf_counter() - start:.0f} s so far)"
          + (f": {r['reason']}" if r["status"] == "failed" else ""), flush=True)
  out = {"benchmark": "all",
         "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
         "machine": machine_info(), "argv": argv, "quick": args.quick, "device_kind": kind,
         "platform": platform, "peaks": peaks, "measured": measured,
         "rows": summary_rows(results, peaks), "results": results,
         "seconds": time.perf_counter() - start}
  files.write_json(path, out, sort_keys=False)
  print(all_table(out))
  print(f"wrote {path}")
  return 0 if all(r["status"] == "ok" for r in results.values()) else 1


def _timed_parts(name: str, r: Json) -> list[tuple[str, float, float | None, float | None, str]]:
  """(what is timed, median s, model FLOPs, bytes that must move, dtype) of one result."""
  parts = []
  if name == "sampler":
    s = r["settings"]
    t = s["new_tokens"]
    for m in r["results"]:
      for cache, o in m["ours"].items():
        f = o["flops"]
        parts.append((f"{m['model']}: sample {s['batch']} x {t} tokens ({cache} cache)",
                      o["median_s"], f["prefill"] + (t - 1) * f["step"],
                      t * o["bytes_per_step"]["total"], "float32"))
  elif name == "train":
    s = r["settings"]
    for variant, o in r["ours"].items():
      parts.append((f"{s['model']}: IPO step, {s['pairs_per_batch']} pairs ({variant})",
                    o["median_s"], r["model_flops"]["total"], o.get("xla_bytes_accessed"),
                    "bfloat16" if variant == "ours/bfloat16" else "float32"))
  elif name == "online":
    s = r["settings"]
    for phase in ("sample", "judge", "update", "step"):
      parts.append((f"{s['policy']} {s['method']}: online {phase}", r["median_s"][phase],
                    r["model_flops"][phase] or None, None, "float32"))
  elif name == "profile":
    s = r["settings"]
    for dtype, p in r["profiles"].items():
      parts.append((f"{s['model']}: IPO step traced ({dtype} activations)", p["step_s"],
                    r["model_flops"], None, dtype))
  elif name == "families":
    for m in r["models"]:
      for part, sec in m["median_s"].items():
        if part in m["flops"]:
          parts.append((f"{m['model']}: {part}", sec, m["flops"][part], None, "float32"))
  return parts


def summary_rows(results: dict[str, Json], peaks: Json) -> list[Json]:
  """One row per timed thing: its median, MFU and MBU against `peaks`."""
  rows = []
  bw = peaks["bandwidth"]
  for name, r in results.items():
    if r["status"] != "ok":
      rows.append({"benchmark": name, "timed": f"FAILED: {r['reason']}", "median_s": None,
                   "mfu": None, "mbu": None, "dtype": None})
      continue
    for timed, median, flops, nbytes, dtype in _timed_parts(name, r):
      peak = peaks[dtype]
      rows.append({"benchmark": name, "timed": timed, "median_s": median, "flops": flops,
                   "bytes": nbytes, "dtype": dtype,
                   "mfu": flops / median / peak["flops"] if flops else None,
                   "mbu": nbytes / median / bw["bytes_per_s"] if nbytes else None,
                   "peak_flops": peak["flops"], "peak_source": peak["source"]})
  return rows


def all_table(out: Json) -> str:
  p = out["peaks"]
  short = lambda src: "table" if src.startswith("table") else "measured"
  lines = [f"device: {out['device_kind']} ({out['platform']}); {p['note']}",
           f"peaks: bfloat16 {p['bfloat16']['flops'] / 1e12:.3g} TFLOP/s "
           f"({p['bfloat16']['source']}), float32 {p['float32']['flops'] / 1e12:.3g} TFLOP/s "
           f"({p['float32']['source']}), bandwidth {p['bandwidth']['bytes_per_s'] / 1e9:.4g} "
           f"GB/s ({p['bandwidth']['source']})\n",
           "| benchmark | timed | median s | MFU | MBU | peak (dtype, from) |",
           "|---|---|---|---|---|---|"]
  for r in out["rows"]:
    peak = (f"{r['peak_flops'] / 1e12:.3g} TFLOP/s {r['dtype']}, {short(r['peak_source'])}"
            if r.get("peak_flops") else "")
    lines.append(f"| {r['benchmark']} | {r['timed']} | {fmt(r['median_s'], spec='.4f')} | "
                 f"{fmt(r['mfu'], 100, '.2f', '%')} | {fmt(r['mbu'], 100, '.2f', '%')} | "
                 f"{peak} |")
  lines.append(f"\nMFU: model FLOPs / median / peak for the dtype; MBU: bytes a step must "
               f"move (sampler: the decode steps' reads; train: XLA's bytes accessed) / median "
               f"/ bandwidth; n/a where not counted. {out['seconds']:.0f} s in all.")
  return "\n".join(lines)


def add_args(p: argparse.ArgumentParser):
  p.add_argument("--json", required=True,
                 help="a .json file, or a directory to write all.json (and the profile's trace) in")
  p.add_argument("--quick", action="store_true",
                 help="small sizes: the tests' toy sizes on CPU, minutes on an accelerator")
  p.add_argument("--only", default="", help="comma-separated benchmarks (default: all)")


def argv_of(argv) -> list[str]:
  return sys.argv[1:] if argv is None else list(argv)
