"""The sampler benchmark: our jitted sampler against Hugging Face `generate`.

Both sample at temperature 1 with EOS disabled from the same architecture and
weights (converted from one random HF model), so both produce exactly
`new_tokens` tokens per row. HF runs in two modes, interleaved with ours: its
default (a dynamic cache, eager) and its fastest CPU path (a static cache, the
forward under `torch.compile`; `--no-hf_compile` leaves it out). Also a
memory-bandwidth-utilisation estimate of our decode step, and its FLOP rate.
On a machine shared with other jobs every figure moves with their load:
contenders are interleaved, medians are the headline, and the fastest runs
are reported beside them; FLOP utilisations are against the fastest matmul
observed in the run, itself only as good as the quietest moment it caught.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time
from typing import Any, Callable

import jax
import numpy as np

from alignment.bench.measure import (Json, fmt, matmul_calls, matmul_peak, memory_bandwidth,
                                     timed_interleaved, up_front)
from alignment.bench.torch_reference import hf_compiled_sample_calls, hf_sample_calls, hf_t5


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
  d, hk = cfg.d_model, cfg.num_heads * cfg.head_dim
  mlp = (2 if cfg.feed_forward == "relu" else 3) * d * cfg.d_ff  # gated: 3 matrices
  step = 2 * batch * (cfg.num_decoder_layers * (6 * d * hk + mlp +
                                                2 * hk * (new_tokens + prompt_len))
                      + d * cfg.vocab_size)
  encoder = 2 * batch * prompt_len * (cfg.num_encoder_layers * (4 * d * hk + mlp +
                                                                2 * hk * prompt_len)
                                      + cfg.num_decoder_layers * 2 * d * hk)
  return {"step": step, "prefill": encoder + step}


@dataclasses.dataclass(frozen=True)
class _SamplerSetup:
  """One model in both frameworks with the same weights, and the prompts both sample from."""
  cfg: Any  # our model config, converted from the HF model's
  hf: Any
  params: Any  # ours, converted from the HF weights
  n_params: int
  prompt: np.ndarray  # (batch, prompt_len) token ids
  prompts: Any  # the same prompts as our PromptBatch
  model: Any


def _sampler_setup(name: str, args) -> _SamplerSetup:
  """A random HF T5 of the zoo model's shape, converted to our parameters."""
  from alignment.data.batches import PromptBatch  # pylint: disable=g-import-not-at-top
  from alignment.models import convert, heads, zoo  # pylint: disable=g-import-not-at-top
  hf = hf_t5(zoo.get(name), seed=0)
  tensors = {k: v.detach().float().numpy() for k, v in hf.state_dict().items()}
  cfg = convert.config_from_hf(hf.config.to_dict())
  params = jax.device_put(convert.params_from_hf(tensors, cfg))
  n_params = sum(v.size for v in jax.tree.leaves(params))
  rng = np.random.default_rng(1)
  prompt = rng.integers(2, cfg.vocab_size, size=(args.batch, args.prompt_len)).astype(np.int32)
  return _SamplerSetup(cfg, hf, params, n_params, prompt,
                       PromptBatch(prompt, np.ones_like(prompt)), heads.LanguageModel(cfg))


def _our_sampler_calls(args, setup: _SamplerSetup) -> tuple[dict, dict]:
  """Our sampler per cache dtype, compiled: ((name, new tokens) -> a call that
  blocks until done, compile seconds).

  Each runs with `new_tokens` new tokens and with 1 (prefill + first token),
  so the time splits into prefill and per-step.
  """
  from alignment import sampling  # pylint: disable=g-import-not-at-top
  b, t = args.batch, args.new_tokens
  model, params, prompts = setup.model, setup.params, setup.prompts
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
  return calls, compile_s


def _sampling_summary(times: dict, label: str, batch: int, new_tokens: int) -> Json:
  """Medians (the headline), and the fastest run of each (the least contended)."""
  b, t = batch, new_tokens
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


def _our_sampler_figures(args, setup: _SamplerSetup, times: dict, compile_s: dict,
                         peak_gflops: float) -> Json:
  """Per cache dtype: the times, the FLOP utilisation of a decode step and of
  the prefill, and the bytes a decode step must read (for its bandwidth)."""
  b, lp, t = args.batch, args.prompt_len, args.new_tokens
  cfg = setup.cfg
  flops = _t5_flops(cfg, b, lp, t)
  ours_out: Json = {}
  for cache_dtype in args.cache_dtypes:
    o = _sampling_summary(times, f"ours/{cache_dtype}", b, t)
    step = o["per_step_s"]
    moved = _decode_bytes_per_step(cfg, setup.params, b, lp, t,
                                   2 if cache_dtype == "bfloat16" else 4)
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
  return ours_out


def _hf_figures(args, times: dict) -> Json:
  """HF at each thread count; the fastest is the baseline (with another process
  on the cores, OpenMP barriers can cost torch 10x)."""
  import torch  # pylint: disable=g-import-not-at-top
  by_threads = {k: dict(_sampling_summary(times, f"hf/{k}", args.batch, args.new_tokens),
                        torch_threads=k) for k in args.hf_threads}
  best = min(by_threads, key=lambda k: by_threads[k]["median_s"])
  return dict(by_threads[best], torch=torch.__version__,
              all_thread_counts={str(k): v for k, v in by_threads.items()})


def _hf_compiled_figures(args, times: dict, compile_s: dict) -> Json:
  """HF `generate` with a static cache under `torch.compile`, at the most threads tried."""
  threads = max(args.hf_threads)
  return dict(_sampling_summary(times, f"hf-compiled/{threads}", args.batch, args.new_tokens),
              torch_threads=threads, mode="static cache, forward under torch.compile",
              backend=args.compile_backend,
              compile_s=compile_s[args.new_tokens],
              compile_s_prefill_only=compile_s[1])


def _sampler_one(name: str, args, peak_gflops: float) -> Json:
  """Ours (per cache dtype) and HF (per torch thread count) on one model, interleaved."""
  setup = _sampler_setup(name, args)
  cfg = setup.cfg
  calls, compile_s = _our_sampler_calls(args, setup)
  # The matmul peak is measured among the contenders too, under the same load.
  matmuls = matmul_calls()
  for shape, (_, fn) in matmuls.items():
    calls[(f"matmul/{shape}", 0)] = fn
  calls.update(hf_sample_calls(setup.hf, setup.prompt, args.hf_threads, (args.new_tokens, 1)))
  if args.hf_compile:
    compiled_calls, hf_compile_s = hf_compiled_sample_calls(
        setup.hf, setup.prompt, max(args.hf_threads), (args.new_tokens, 1),
        backend=args.compile_backend)
    calls.update(compiled_calls)
  times = timed_interleaved(calls, args.repeats)
  peak = {shape: flops / min(times[(f"matmul/{shape}", 0)]) / 1e9
          for shape, (flops, _) in matmuls.items()}
  peak_gflops = max(peak_gflops, *peak.values())
  ours_out = _our_sampler_figures(args, setup, times, compile_s, peak_gflops)
  theirs = _hf_figures(args, times)
  hf_best = min(v["best"]["s"] for v in theirs["all_thread_counts"].values())
  out = {"model": name, "params": int(setup.n_params), "vocab": cfg.vocab_size,
         "d_model": cfg.d_model, "layers": [cfg.num_encoder_layers, cfg.num_decoder_layers],
         "matmul_peak_during_runs": peak, "peak_gflops_used": peak_gflops,
         "ours": ours_out, "hf": theirs,
         "ratio": {k: v["tokens_per_s"] / theirs["tokens_per_s"] for k, v in ours_out.items()},
         "ratio_of_fastest_runs": {k: hf_best / v["best"]["s"] for k, v in ours_out.items()}}
  if args.hf_compile:
    compiled = _hf_compiled_figures(args, times, hf_compile_s)
    out["hf_compiled"] = compiled
    out["ratio_vs_compiled"] = {k: v["tokens_per_s"] / compiled["tokens_per_s"]
                                for k, v in ours_out.items()}
    out["ratio_vs_compiled_of_fastest_runs"] = {k: compiled["best"]["s"] / v["best"]["s"]
                                                for k, v in ours_out.items()}
  return out


def bench_sampler(args) -> Json:
  bandwidth = up_front(args, "memory_bandwidth", memory_bandwidth)
  peak = up_front(args, "matmul_peak", matmul_peak)
  results = [_sampler_one(name, args, peak["gflops"]) for name in args.models]
  for r in results:
    for v in r["ours"].values():
      for d in (v, v["best"]):
        d["mbu"] = d["achieved_gbs"] / bandwidth["gbs"] if d["achieved_gbs"] is not None else None
  return {"settings": {"batch": args.batch, "prompt_len": args.prompt_len,
                       "new_tokens": args.new_tokens, "temperature": 1.0, "eos": "disabled",
                       "repeats": args.repeats, "statistic": "median"},
          "memory_bandwidth": bandwidth, "matmul_peak": peak, "results": results}


def sampler_args(p: argparse.ArgumentParser):
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
  p.add_argument("--hf_compile", action=argparse.BooleanOptionalAction, default=True,
                 help="also time HF generate with a static cache and its forward under "
                      "torch.compile, at the most threads of --hf_threads")
  p.add_argument("--compile_backend", default="inductor",
                 help="torch.compile's backend for it (the tests' toy run: eager)")


def sampler_table(result: Json) -> str:
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
          f"{fmt(o['per_step_s'], 1e3)} | "
          f"{fmt(r['hf']['per_step_s'], 1e3)} | {o['prefill_and_first_token_s']:.3f} / "
          f"{r['hf']['prefill_and_first_token_s']:.3f} | {o['compile_s']:.1f} | "
          f"{fmt(o['best']['mbu'], 100, '.1f', '%')} | "
          f"{fmt(o['best']['step_flop_utilisation'], r['peak_gflops_used'], '.0f')} / "
          f"{fmt(o['best']['prefill_flop_utilisation'], r['peak_gflops_used'], '.0f')} |")
  compiled = [r for r in result["results"] if "hf_compiled" in r]
  if compiled:
    rows += ["\nAgainst HF `generate` with a static cache and its forward under torch.compile "
             "(medians of the same interleaved runs):\n",
             "| model | HF compiled tok/s (threads) | ours tok/s (cache) | ratio | fastest | "
             "HF compiled ms/step | HF compile s | HF default tok/s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in compiled:
      c = r["hf_compiled"]
      for dtype, o in r["ours"].items():
        rows.append(
            f"| {r['model']} | {c['tokens_per_s']:.0f} ({c['torch_threads']}) | "
            f"{o['tokens_per_s']:.0f} ({dtype}) | {r['ratio_vs_compiled'][dtype]:.2f}x | "
            f"{r['ratio_vs_compiled_of_fastest_runs'][dtype]:.2f}x | "
            f"{fmt(c['per_step_s'], 1e3)} | {c['compile_s']:.0f} | "
            f"{r['hf']['tokens_per_s']:.0f} |")
  rows.append(f"\nload average before/after: {result['load_average_before']} / "
              f"{result['load_average_after']}")
  bw = result["memory_bandwidth"]
  rows.append(f"\nmeasured copy bandwidth: {bw['gbs']:.1f} GB/s "
              f"(numpy {bw['numpy_gbs']:.1f}, XLA {bw['xla_gbs']:.1f}); "
              f"float32 matmul peak (best of up-front and during each model's runs): " +
              ", ".join(f"{r['model']} {r['peak_gflops_used']:.0f}" for r in result["results"]) +
              " GFLOP/s")
  return "\n".join(rows)
