"""Benchmarks: `python -m alignment.bench <name> --json=FILE`.

Each benchmark is one function `bench_<name>(args) -> dict`, registered in
`BENCHMARKS` with a function that adds its flags; `main` adds the date and the
machine to its result, writes the JSON (atomically) and prints a table.
Timings are medians of `--repeats` runs after a warm-up; compile time is
measured apart. Targets live in DESIGN.md; benchmarks measure, tests do not
time.

sampler: our jitted sampler against Hugging Face `generate` (PyTorch, same
architecture and weights, converted from one random HF model) sampling at
temperature 1 with EOS disabled, so both produce exactly `new_tokens` tokens
per row; plus a memory-bandwidth-utilisation estimate of our decode step and
its FLOP rate. On a machine shared with other jobs every figure moves with
their load: contenders are interleaved, medians are the headline, and the
fastest runs are reported beside them; FLOP utilisations are against the
fastest matmul observed in the run, itself only as good as the quietest
moment it caught.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

Json = dict[str, Any]


# --------------------------------------------------------------------------
# Shared measurement helpers
# --------------------------------------------------------------------------


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


def matmul_calls(shapes=MATMUL_SHAPES) -> dict[str, tuple[int, Callable[[], Any]]]:
  """'MxKxN' -> (FLOPs, a float32 XLA matmul that blocks until done)."""
  calls = {}
  for m, k, n in shapes:
    a = jnp.asarray(np.random.default_rng(0).random((m, k), dtype=np.float32))
    b = jnp.asarray(np.random.default_rng(1).random((k, n), dtype=np.float32))
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


def write_json(path: str, result: Json):
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(result, f, indent=1)
  os.replace(tmp, path)


# --------------------------------------------------------------------------
# sampler
# --------------------------------------------------------------------------


def _hf_t5(cfg, seed: int):
  """A random Hugging Face T5 v1.1 of the zoo config's shape."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  torch.manual_seed(seed)
  hf_cfg = transformers.T5Config(
      vocab_size=cfg.vocab_size, d_model=cfg.d_model, d_kv=cfg.head_dim, d_ff=cfg.d_ff,
      num_layers=cfg.num_encoder_layers, num_decoder_layers=cfg.num_decoder_layers,
      num_heads=cfg.num_heads, relative_attention_num_buckets=cfg.relative_buckets,
      relative_attention_max_distance=cfg.relative_max_distance,
      feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0,
      layer_norm_epsilon=cfg.norm_eps, decoder_start_token_id=0, pad_token_id=0,
      eos_token_id=1)
  return transformers.T5ForConditionalGeneration(hf_cfg).eval()


def _decode_bytes_per_step(cfg, params, batch: int, prompt_len: int, new_tokens: int,
                           cache_bytes: int) -> Json:
  """Bytes a T5 decode step must read: decoder weights, lm_head, the caches.

  The self-attention cache is read whole every step (static shape), the
  cross-attention keys/values too; the embedding table contributes B rows.
  """
  nbytes = lambda tree: sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))
  bb = params["backbone"]
  decoder = sum(nbytes(v) for k, v in bb.items()
                if k.startswith("decoder_layer") or k in ("decoder_norm", "decoder_relpos"))
  head = nbytes(params.get("lm_head", {}))
  embed_rows = batch * cfg.d_model * 4
  kv = 2 * cfg.num_heads * cfg.head_dim * batch * cfg.num_decoder_layers
  self_cache = kv * new_tokens * cache_bytes
  cross = kv * prompt_len * 4
  total = decoder + head + embed_rows + self_cache + cross
  return {"decoder_weights": decoder, "lm_head": head, "self_cache": self_cache,
          "cross_kv": cross, "total": total}


def _t5_flops(cfg, batch: int, prompt_len: int, new_tokens: int) -> Json:
  """Model FLOPs (2 per multiply-add) of T5 sampling: prefill, and one decode step.

  A step runs the decoder on one token per row (self-attention over the
  static T-slot cache, cross-attention over Lp) and the output projection;
  the prefill runs the encoder, projects cross-attention keys/values once,
  and takes the first step.
  """
  d, hk, f = cfg.d_model, cfg.num_heads * cfg.head_dim, cfg.d_ff
  step = 2 * batch * (cfg.num_decoder_layers * (6 * d * hk + 3 * d * f +
                                                2 * hk * (new_tokens + prompt_len))
                      + d * cfg.vocab_size)
  encoder = 2 * batch * prompt_len * (cfg.num_encoder_layers * (4 * d * hk + 3 * d * f +
                                                                2 * hk * prompt_len)
                                      + cfg.num_decoder_layers * 2 * d * hk)
  return {"step": step, "prefill": encoder + step}


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


def _sampler_one(name: str, args, peak_gflops: float) -> Json:
  """Ours (per cache dtype) and HF (per torch thread count) on one model, interleaved."""
  import torch  # pylint: disable=g-import-not-at-top

  from alignment import sampling  # pylint: disable=g-import-not-at-top
  from alignment.data.batches import PromptBatch  # pylint: disable=g-import-not-at-top
  from alignment.models import convert, heads, zoo  # pylint: disable=g-import-not-at-top

  cfg = zoo.get(name)
  hf = _hf_t5(cfg, seed=0)
  tensors = {k: v.detach().float().numpy() for k, v in hf.state_dict().items()}
  cfg = convert.config_from_hf(hf.config.to_dict())
  params = jax.device_put(convert.params_from_hf(tensors, cfg))
  n_params = sum(v.size for v in jax.tree.leaves(params))
  b, lp, t = args.batch, args.prompt_len, args.new_tokens
  rng = np.random.default_rng(1)
  prompt = rng.integers(2, cfg.vocab_size, size=(b, lp)).astype(np.int32)
  prompts = PromptBatch(prompt, np.ones_like(prompt))
  model = heads.LanguageModel(cfg)

  # -- contenders: (name, new tokens) -> a call that blocks until done -------
  # Each runs with `t` new tokens and with 1 (prefill + first token), so the
  # time splits into prefill and per-step.
  calls: dict[tuple[str, int], Callable[[], Any]] = {}
  compile_s = {}
  keys = iter(jax.random.split(jax.random.key(0), 1000))
  for cache_dtype in args.cache_dtypes:
    for new_tokens in (t, 1):
      config = sampling.SamplingConfig(max_new_tokens=new_tokens, temperature=1.0, eos_id=None,
                                       cache_dtype=cache_dtype)
      start = time.perf_counter()
      compiled = sampling.Sampler(model, config).lower(params, prompts,
                                                       jax.random.key(0)).compile()
      compile_s[(cache_dtype, new_tokens)] = time.perf_counter() - start

      def ours(c=compiled, n=new_tokens):
        out = jax.block_until_ready(c(params, prompts, next(keys)).tokens)
        assert out.shape == (b, n)

      calls[(f"ours/{cache_dtype}", new_tokens)] = ours

  # The matmul peak is measured among the contenders too, under the same load.
  matmuls = matmul_calls()
  for shape, (_, fn) in matmuls.items():
    calls[(f"matmul/{shape}", 0)] = fn

  hf.generation_config.eos_token_id = None
  ids = torch.tensor(prompt, dtype=torch.long)
  mask = torch.ones_like(ids)
  for threads in args.hf_threads:
    for new_tokens in (t, 1):
      def theirs(n=new_tokens, k=threads):
        torch.set_num_threads(k)
        with torch.no_grad():
          out = hf.generate(input_ids=ids, attention_mask=mask, do_sample=True,
                            temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=n,
                            eos_token_id=None, pad_token_id=0)
        assert out.shape == (b, n + 1), out.shape  # decoder start + new tokens

      calls[(f"hf/{threads}", new_tokens)] = theirs

  times = timed_interleaved(calls, args.repeats)
  peak = {shape: flops / min(times[(f"matmul/{shape}", 0)]) / 1e9
          for shape, (flops, _) in matmuls.items()}
  peak_gflops = max(peak_gflops, *peak.values())

  def summary(label):
    """Medians (the headline), and the fastest run of each (the least contended)."""
    total, prefill = (statistics.median(times[(label, n)]) for n in (t, 1))
    best, best_prefill = (min(times[(label, n)]) for n in (t, 1))
    # Noise can swamp the difference at toy sizes: step metrics are None then.
    per_step = lambda a, p: (a - p) / (t - 1) if t > 1 and a > p else None
    return {"median_s": total, "times_s": times[(label, t)], "tokens_per_s": b * t / total,
            "prefill_and_first_token_s": prefill, "prefill_times_s": times[(label, 1)],
            "per_step_s": per_step(total, prefill),
            "best": {"s": best, "tokens_per_s": b * t / best,
                     "prefill_and_first_token_s": best_prefill,
                     "per_step_s": per_step(best, best_prefill)}}

  flops = _t5_flops(cfg, b, lp, t)
  ours_out: Json = {}
  for cache_dtype in args.cache_dtypes:
    o = summary(f"ours/{cache_dtype}")
    step = o["per_step_s"]
    moved = _decode_bytes_per_step(cfg, params, b, lp, t, 2 if cache_dtype == "bfloat16" else 4)
    o.update(compile_s=compile_s[(cache_dtype, t)], flops=flops, bytes_per_step=moved,
             step_flop_utilisation=flops["step"] / step / 1e9 / peak_gflops if step else None,
             prefill_flop_utilisation=(flops["prefill"] / o["prefill_and_first_token_s"] / 1e9
                                       / peak_gflops),
             achieved_gbs=moved["total"] / step / 1e9 if step else None)
    best_step = o["best"]["per_step_s"]
    o["best"].update(
        step_flop_utilisation=(flops["step"] / best_step / 1e9 / peak_gflops
                               if best_step else None),
        prefill_flop_utilisation=(flops["prefill"] / o["best"]["prefill_and_first_token_s"]
                                  / 1e9 / peak_gflops),
        achieved_gbs=moved["total"] / best_step / 1e9 if best_step else None)
    ours_out[cache_dtype] = o
  # HF at each thread count; the fastest is the baseline (with another process
  # on the cores, OpenMP barriers can cost torch 10x).
  by_threads = {k: dict(summary(f"hf/{k}"), torch_threads=k) for k in args.hf_threads}
  best = min(by_threads, key=lambda k: by_threads[k]["median_s"])
  theirs = dict(by_threads[best], torch=torch.__version__,
                all_thread_counts={str(k): v for k, v in by_threads.items()})
  hf_best = min(v["best"]["s"] for v in by_threads.values())
  return {"model": name, "params": int(n_params), "vocab": cfg.vocab_size,
          "d_model": cfg.d_model, "layers": [cfg.num_encoder_layers, cfg.num_decoder_layers],
          "matmul_peak_during_runs": peak, "peak_gflops_used": peak_gflops,
          "ours": ours_out, "hf": theirs,
          "ratio": {k: v["tokens_per_s"] / theirs["tokens_per_s"] for k, v in ours_out.items()},
          "ratio_of_fastest_runs": {k: hf_best / v["best"]["s"] for k, v in ours_out.items()}}


def bench_sampler(args) -> Json:
  bandwidth = memory_bandwidth()
  peak = matmul_peak()
  results = [_sampler_one(name, args, peak["gflops"]) for name in args.models]
  for r in results:
    for v in r["ours"].values():
      for d in (v, v["best"]):
        d["mbu"] = d["achieved_gbs"] / bandwidth["gbs"] if d["achieved_gbs"] is not None else None
  return {"settings": {"batch": args.batch, "prompt_len": args.prompt_len,
                       "new_tokens": args.new_tokens, "temperature": 1.0, "eos": "disabled",
                       "repeats": args.repeats, "statistic": "median"},
          "memory_bandwidth": bandwidth, "matmul_peak": peak, "results": results}


def _sampler_args(p: argparse.ArgumentParser):
  p.add_argument("--models", default="t5-tiny,t5-small", type=lambda s: s.split(","),
                 help="comma-separated zoo T5 names")
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--prompt_len", type=int, default=48)
  p.add_argument("--new_tokens", type=int, default=32)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--cache_dtypes", default="float32,bfloat16", type=lambda s: s.split(","))
  p.add_argument("--hf_threads", default=f"1,{os.cpu_count() or 1}",
                 type=lambda s: sorted({int(x) for x in s.split(",")}),
                 help="torch thread counts to try; the fastest is the baseline")


def _fmt(x, scale=1.0, spec=".2f", unit=""):
  return "n/a" if x is None else f"{x * scale:{spec}}{unit}"


def _sampler_table(result: Json) -> str:
  rows = ["Medians of interleaved runs; 'fastest' = ratio of each side's fastest run, and "
          "MBU and GFLOP/s of our fastest run.\n",
          "| model | params | HF tok/s (threads) | ours tok/s (cache) | ratio | fastest | "
          "ours ms/step | HF ms/step | ours / HF prefill s | compile s | MBU | "
          "step / prefill GFLOP/s |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in result["results"]:
    for dtype, o in r["ours"].items():
      rows.append(
          f"| {r['model']} | {r['params'] / 1e6:.1f}M | {r['hf']['tokens_per_s']:.0f} "
          f"({r['hf']['torch_threads']}) | {o['tokens_per_s']:.0f} ({dtype}) | "
          f"{r['ratio'][dtype]:.2f}x | {r['ratio_of_fastest_runs'][dtype]:.2f}x | "
          f"{_fmt(o['per_step_s'], 1e3)} | "
          f"{_fmt(r['hf']['per_step_s'], 1e3)} | {o['prefill_and_first_token_s']:.3f} / "
          f"{r['hf']['prefill_and_first_token_s']:.3f} | {o['compile_s']:.1f} | "
          f"{_fmt(o['best']['mbu'], 100, '.1f', '%')} | "
          f"{_fmt(o['best']['step_flop_utilisation'], r['peak_gflops_used'], '.0f')} / "
          f"{_fmt(o['best']['prefill_flop_utilisation'], r['peak_gflops_used'], '.0f')} |")
  rows.append(f"\nload average before/after: {result['load_average_before']} / "
              f"{result['load_average_after']}")
  bw = result["memory_bandwidth"]
  rows.append(f"\nmeasured copy bandwidth: {bw['gbs']:.1f} GB/s "
              f"(numpy {bw['numpy_gbs']:.1f}, XLA {bw['xla_gbs']:.1f}); "
              f"float32 matmul peak (best of up-front and during each model's runs): " +
              ", ".join(f"{r['model']} {r['peak_gflops_used']:.0f}" for r in result["results"]) +
              " GFLOP/s")
  return "\n".join(rows)


# name -> (add flags, run, format a table)
BENCHMARKS: dict[str, tuple[Callable, Callable, Callable]] = {
    "sampler": (_sampler_args, bench_sampler, _sampler_table),
}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m alignment.bench",
                                   description=__doc__.split("\n\n")[0])
  sub = parser.add_subparsers(dest="benchmark", required=True)
  for name, (add_args, _, _) in BENCHMARKS.items():
    p = sub.add_parser(name)
    p.add_argument("--json", required=True, help="where to write the result")
    add_args(p)
  args = parser.parse_args(argv)
  jax.config.update("jax_threefry_partitionable", True)
  _, run, table = BENCHMARKS[args.benchmark]
  result = {"benchmark": args.benchmark,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine_info(), "argv": sys.argv[1:] if argv is None else list(argv),
            "load_average_before": os.getloadavg()}
  result.update(run(args))
  result["load_average_after"] = os.getloadavg()
  write_json(args.json, result)
  print(table(result))
  print(f"wrote {args.json}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
