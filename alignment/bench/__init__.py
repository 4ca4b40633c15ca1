"""Benchmarks: `python -m alignment.bench <name> --json=FILE`, or all of them.

`python -m alignment.bench all --json=DIR [--quick]` runs every benchmark in one
process and prints one table of MFU and MBU against the device's peaks (`suite`).

Each benchmark is one function `bench_<name>(args) -> dict` in its own module,
registered in `BENCHMARKS` with a function that adds its flags and one that
formats its table; `main` adds the date and the machine to its result, writes
the JSON (atomically) and prints the table. Timings are medians of
`--repeats` runs after a warm-up; compile time is measured apart. Targets and
the figures measured against them are in BENCHMARKS.md; benchmarks measure,
tests do not time.

  measure          the machine, timings (interleaved for contenders), copy
                   bandwidth, matmul peak: what every benchmark measures with
  sampler          our jitted sampler against Hugging Face `generate` (PyTorch,
                   same architecture and weights), with its memory-bandwidth
                   and FLOP utilisation
  train            our IPO step (policy and reference in one program) against
                   the same step in PyTorch on Hugging Face T5
  online           one online step, phase by phase
  families         T5 against Llama-style, rung by rung of the zoo's CPU ladder:
                   SFT step, IPO update and sampling, interleaved
  profile          where `train`'s step spends its time, per HLO op category,
                   from a `jax.profiler` trace
  torch_reference  the PyTorch / Hugging Face side: random HF T5 models, the
                   `generate` contenders, the train step in PyTorch
  peaks            vendor peak FLOP/s and HBM bandwidth by JAX device kind
  suite            `all`: every benchmark in one process, one table of MFU/MBU

torch and transformers are imported inside the functions that use them, so
importing this package needs neither.
"""
from __future__ import annotations

import argparse
import datetime
import os
from typing import Callable

import jax

from alignment import files
from alignment.bench import suite
from alignment.bench.measure import (MATMUL_SHAPES, Json, machine_info, matmul_calls, matmul_peak,
                                     memory_bandwidth, timed, timed_interleaved)
from alignment.bench.families import bench_families, families_args, families_table
from alignment.bench.online import bench_online, online_args, online_table
from alignment.bench.profile import (bench_profile, hlo_op_kinds, library_fusions, op_profile,
                                     profile_args, profile_table)
from alignment.bench.sampler import bench_sampler, sampler_args, sampler_table
from alignment.bench.train import bench_train, train_args, train_table

__all__ = ["BENCHMARKS", "MATMUL_SHAPES", "Json", "bench_families", "bench_online",
           "bench_profile", "bench_sampler", "bench_train", "hlo_op_kinds", "library_fusions",
           "machine_info", "main", "matmul_calls", "matmul_peak", "memory_bandwidth", "op_profile",
           "timed", "timed_interleaved"]


# name -> (add flags, run, format a table)
BENCHMARKS: dict[str, tuple[Callable, Callable, Callable]] = {
    "sampler": (sampler_args, bench_sampler, sampler_table),
    "train": (train_args, bench_train, train_table),
    "online": (online_args, bench_online, online_table),
    "profile": (profile_args, bench_profile, profile_table),
    "families": (families_args, bench_families, families_table),
}


def _run_one(name: str, args: argparse.Namespace, argv: list) -> Json:
  """One benchmark's result, with the date, the machine and the load around it."""
  result = {"benchmark": name,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine_info(), "argv": list(argv),
            "load_average_before": os.getloadavg()}
  result.update(BENCHMARKS[name][1](args))
  result["load_average_after"] = os.getloadavg()
  return result


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m alignment.bench",
                                   description=__doc__.split("\n\n")[0])
  sub = parser.add_subparsers(dest="benchmark", required=True)
  for name, (add_args, _, _) in BENCHMARKS.items():
    p = sub.add_parser(name)
    p.add_argument("--json", required=True, help="where to write the result")
    add_args(p)
  suite.add_args(sub.add_parser("all", help="every benchmark, one table (alignment.bench.suite)"))
  args = parser.parse_args(argv)
  jax.config.update("jax_threefry_partitionable", True)
  if args.benchmark == "all":
    return suite.run_all(args, BENCHMARKS, _run_one, suite.argv_of(argv))
  result = _run_one(args.benchmark, args, suite.argv_of(argv))
  files.write_json(args.json, result, sort_keys=False)
  print(BENCHMARKS[args.benchmark][2](result))
  print(f"wrote {args.json}")
  return 0
