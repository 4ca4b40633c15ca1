"""What every benchmark measures with: the machine, timings, copy bandwidth, matmul peak.

Timings block until the work is done (the callables given must), and
`timed_interleaved` gives contenders the same share of a shared machine's
load; the matmul peak and the copy bandwidth are the denominators of the
FLOP and memory-bandwidth utilisations the benchmarks report.
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

Json = dict[str, Any]


def machine_info() -> Json:
  cpu = platform.processor()
  try:
    with open("/proc/cpuinfo") as f:
      names = [l.split(":", 1)[1].strip() for l in f if l.startswith("model name")]
    cpu = names[0] if names else cpu
  except OSError:
    pass
  return {"platform": platform.platform(), "python": platform.python_version(),
          "cpu": cpu, "cpu_count": os.cpu_count(), "jax": jax.__version__,
          "jax_backend": jax.default_backend(),
          "devices": [str(d) for d in jax.devices()]}


def timed(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> list[float]:
  """Wall seconds of `repeats` calls of fn (which must block until done)."""
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return times


def timed_interleaved(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list]:
  """Wall seconds of each fn, called in turn within every repeat after one warm-up each.

  Interleaving gives every contender the same share of whatever else the
  machine is doing, so their ratio stays fair when the load drifts.
  """
  for fn in fns.values():
    fn()
  times: dict[str, list] = {k: [] for k in fns}
  for _ in range(repeats):
    for k, fn in fns.items():
      start = time.perf_counter()
      fn()
      times[k].append(time.perf_counter() - start)
  return times


def memory_bandwidth(mib: int = 512, repeats: int = 5) -> Json:
  """Copy bandwidth in GB/s (bytes read + bytes written), numpy and XLA, best of both."""
  n = mib * 2**20 // 4
  src = np.random.default_rng(0).random(n, dtype=np.float32)
  dst = np.empty_like(src)
  numpy_s = statistics.median(timed(lambda: np.copyto(dst, src), repeats))
  # Donated, so XLA writes into the input's buffer: no page faults of fresh memory.
  copy = jax.jit(lambda a: a * 1.0000001, donate_argnums=0)  # not foldable to a no-op
  box = [jnp.asarray(src)]

  def xla_copy():
    box[0] = copy(box[0])
    box[0].block_until_ready()

  xla_s = statistics.median(timed(xla_copy, repeats))
  moved = 2 * src.nbytes
  out = {"bytes_copied": src.nbytes, "numpy_gbs": moved / numpy_s / 1e9,
         "xla_gbs": moved / xla_s / 1e9}
  out["gbs"] = max(out["numpy_gbs"], out["xla_gbs"])
  return out


MATMUL_SHAPES = ((3072, 512, 1024), (64, 512, 32128))


def matmul_calls(shapes=MATMUL_SHAPES, dtype=jnp.float32
                 ) -> dict[str, tuple[int, Callable[[], Any]]]:
  """'MxKxN' -> (FLOPs, an XLA matmul of `dtype` operands that blocks until done)."""
  calls = {}
  for m, k, n in shapes:
    a = jnp.asarray(np.random.default_rng(0).random((m, k), dtype=np.float32), dtype)
    b = jnp.asarray(np.random.default_rng(1).random((k, n), dtype=np.float32), dtype)
    mm = jax.jit(lambda x, y: x @ y)
    calls[f"{m}x{k}x{n}"] = (2 * m * k * n, lambda mm=mm, a=a, b=b: mm(a, b).block_until_ready())
  return calls


def matmul_peak(repeats: int = 10) -> Json:
  """float32 XLA matmul throughput in GFLOP/s per shape, from the fastest repeat.

  The fastest, not the median: a peak is what the machine can do when nothing
  else runs, and utilisations against it are then conservative.
  """
  out = {name: flops / min(timed(fn, repeats, warmup=2)) / 1e9
         for name, (flops, fn) in matmul_calls().items()}
  out["gflops"] = max(out.values())
  return out


def up_front(args, key: str, measure_fn: Callable[[], Json]) -> Json:
  """What `bench all` measured once for every benchmark (`args.measured[key]`:
  "matmul_peak", "memory_bandwidth"), or `measure_fn()` when run alone."""
  measured = getattr(args, "measured", None)
  return measured[key] if measured else measure_fn()


def fmt(x, scale=1.0, spec=".2f", unit=""):
  """`x * scale` as `spec` followed by `unit` (for the tables), or "n/a" for None."""
  return "n/a" if x is None else f"{x * scale:{spec}}{unit}"
