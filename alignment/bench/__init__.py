"""Benchmarks: `python -m alignment.bench <name> --json=FILE`.

Each benchmark is one function `bench_<name>(args) -> dict`, registered in
`BENCHMARKS` with a function that adds its flags; `main` adds the date and the
machine to its result, writes the JSON (atomically) and prints a table.
Timings are medians of `--repeats` runs after a warm-up; compile time is
measured apart. Targets and the figures measured against them are in BENCHMARKS.md;
benchmarks measure, tests do not time.

sampler: our jitted sampler against Hugging Face `generate` (PyTorch, same
architecture and weights, converted from one random HF model) sampling at
temperature 1 with EOS disabled, so both produce exactly `new_tokens` tokens
per row; plus a memory-bandwidth-utilisation estimate of our decode step and
its FLOP rate. On a machine shared with other jobs every figure moves with
their load: contenders are interleaved, medians are the headline, and the
fastest runs are reported beside them; FLOP utilisations are against the
fastest matmul observed in the run, itself only as good as the quietest
moment it caught.

train: our IPO step (policy and reference in one program) against the same
step in PyTorch on Hugging Face T5; online: one online step phase by phase;
profile: where `train`'s step spends its time, per HLO op category, from a
`jax.profiler` trace.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import re
import statistics
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from alignment import distributed, files

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


# --------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------


def _bench_pairs(vocab: int, batch: int, prompt_len: int, response_len: int, seed: int = 2):
  """Random preference pairs, prompts left padded and responses right padded (EOS-ended)."""
  from alignment.data import batches  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)

  def rows(length, min_len):
    return [list(rng.integers(2, vocab, rng.integers(min_len, length + 1))) for _ in range(batch)]

  def responses():
    tok, mask = batches.right_pad([r[:-1] + [batches.EOS_ID] for r in rows(response_len, 4)],
                                  response_len)
    return tok, mask

  prompt, prompt_mask = batches.left_pad(rows(prompt_len, prompt_len // 2), prompt_len)
  (chosen, chosen_mask), (rejected, rejected_mask) = responses(), responses()
  return batches.PreferenceBatch(prompt, prompt_mask, chosen, chosen_mask, rejected,
                                 rejected_mask)


def _plain_alignment_loss_fn(model, beta: float):
  """The IPO loss as the step computed it before the performance work (an ablation).

  Each prompt repeated for chosen and rejected (the encoder runs twice), and
  token log-probs from a full log-softmax and a gather; otherwise
  `steps.alignment_loss_fn(model, "ipo", beta)`.
  """
  from alignment import losses  # pylint: disable=g-import-not-at-top

  def pair_logps(params, p):
    cat = lambda a, b: jnp.concatenate([a, b], 0)
    resp, mask = cat(p.chosen, p.rejected), cat(p.chosen_mask, p.rejected_mask)
    logits = model.apply({"params": params}, cat(p.prompt, p.prompt),
                         cat(p.prompt_mask, p.prompt_mask), resp, mask)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
    tok = jnp.where(mask > 0, jnp.take_along_axis(logp, resp[..., None], -1)[..., 0], 0.0)
    seq = jnp.sum(tok, -1)
    return seq[:p.prompt.shape[0]], seq[p.prompt.shape[0]:]

  def loss_fn(params, batch, rng):
    del rng
    pc, pr = pair_logps(params, batch["pairs"])
    rc, rr = pair_logps(jax.lax.stop_gradient(batch["ref_params"]), batch["pairs"])
    rc, rr = jax.lax.stop_gradient(rc), jax.lax.stop_gradient(rr)
    return jnp.mean(losses.ipo(pc, pr, rc, rr, beta)), {}

  return loss_fn


def _our_train_step(model, policy, reference, pairs, optimizer, loss_fn):
  """(a call that runs one step and blocks, compile seconds, compiled, first metrics)."""
  from alignment import sharding  # pylint: disable=g-import-not-at-top
  from alignment.models import heads  # pylint: disable=g-import-not-at-top
  from alignment.train import state as state_lib  # pylint: disable=g-import-not-at-top
  mesh = sharding.make_mesh({"data": 1}, jax.devices()[:1])
  rules = sharding.DEFAULT_RULES
  init = heads.init_fn(model, pairs.prompt.shape[1], pairs.chosen.shape[1])
  state, state_shardings = state_lib.create(init, optimizer, mesh, rules, 0)
  state = state.replace(params=jax.device_put(policy, state_shardings.params))
  batch = {"pairs": jax.device_put(pairs), "ref_params": jax.device_put(reference,
                                                                        state_shardings.params)}
  batch_shardings = {"pairs": sharding.batch_shardings(pairs, mesh, rules),
                     "ref_params": state_shardings.params}
  step = state_lib.make_step(loss_fn, optimizer, state_shardings, batch_shardings, mesh, rules)
  start = time.perf_counter()
  with sharding.use(mesh, rules):
    compiled = step.jitted.lower(state, batch).compile()
  compile_s = time.perf_counter() - start
  box = [state]

  def run():
    box[0], metrics = compiled(box[0], batch)
    return jax.block_until_ready(metrics)

  first = {k: float(v) for k, v in run().items()}
  return run, compile_s, compiled, first


def _torch_train_step(policy, reference, pairs, beta: float, opt_cfg):
  """The same step in PyTorch on Hugging Face T5: (a call that runs one step, first metrics).

  Same work as ours: the policy's forward and backward on chosen and
  rejected with each prompt encoded once (the encoder output fed to the
  decoder for both responses, as `pair_logps` does), the reference's forward
  under no_grad, token log-probs as logit - logsumexp, IPO, global-norm
  clipping and AdamW with the same hyper-parameters.
  """
  import torch  # pylint: disable=g-import-not-at-top
  from transformers.modeling_outputs import BaseModelOutput  # pylint: disable=g-import-not-at-top
  t = lambda a: torch.tensor(np.asarray(a), dtype=torch.long)
  prompt, prompt_mask = t(pairs.prompt), t(pairs.prompt_mask)
  resp = torch.cat([t(pairs.chosen), t(pairs.rejected)])
  resp_mask = torch.cat([t(pairs.chosen_mask), t(pairs.rejected_mask)])
  dec_in = torch.cat([torch.zeros_like(resp[:, :1]), resp[:, :-1]], 1)  # start token 0
  dec_mask = torch.cat([torch.ones_like(resp_mask[:, :1]), resp_mask[:, :-1]], 1)
  n = prompt.shape[0]

  def pair_logps(model):
    enc = model.encoder(input_ids=prompt, attention_mask=prompt_mask).last_hidden_state
    out = model(encoder_outputs=BaseModelOutput(last_hidden_state=torch.cat([enc, enc])),
                attention_mask=torch.cat([prompt_mask, prompt_mask]),
                decoder_input_ids=dec_in, decoder_attention_mask=dec_mask)
    logits = out.logits.float()
    tok = logits.gather(-1, resp[..., None])[..., 0] - torch.logsumexp(logits, -1)
    seq = (tok * resp_mask).sum(-1)
    return seq[:n], seq[n:]

  optimizer = torch.optim.AdamW(policy.parameters(), lr=opt_cfg.learning_rate,
                                betas=(opt_cfg.b1, opt_cfg.b2), eps=opt_cfg.eps,
                                weight_decay=opt_cfg.weight_decay, foreach=True)

  def run():
    pc, pr = pair_logps(policy)
    with torch.no_grad():
      rc, rr = pair_logps(reference)
    loss = ((beta * ((pc - rc) - (pr - rr)) - 0.5) ** 2).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), opt_cfg.grad_clip)
    optimizer.step()
    return {"loss": loss.item(), "grad_norm": grad_norm.item()}

  return run, run()


def _bfloat16_accuracy(model32, model16, policy, reference, pairs, beta: float) -> Json:
  """How far the bfloat16-activation step is from the float32 one, on the same batch.

  Sequence log-probs of the policy (nats, summed over a response), the loss,
  and the gradient (cosine and norm ratio): the figures to judge whether
  bfloat16 keeps the accuracy a run needs.
  """
  from alignment.train import steps  # pylint: disable=g-import-not-at-top
  batch = {"pairs": pairs, "ref_params": reference}
  out = {}
  for name, m in (("float32", model32), ("bfloat16", model16)):
    fn = steps.alignment_loss_fn(m, "ipo", beta, "sum")

    def measure(params, m=m, fn=fn):  # one program: one compile per dtype
      (loss, _), grads = jax.value_and_grad(fn, has_aux=True)(params, batch, None)
      return loss, grads, jnp.concatenate(steps.pair_logps(m, params, pairs, "sum"))

    loss, grads, logps = jax.jit(measure)(policy)
    flat = jnp.concatenate([g.ravel() for g in jax.tree.leaves(grads)])
    out[name] = (float(loss), np.asarray(logps, np.float64), flat)
  (l32, lp32, g32), (l16, lp16, g16) = out["float32"], out["bfloat16"]
  diff = np.abs(lp16 - lp32)
  return {"logp_max_abs_diff_nats": float(diff.max()),
          "logp_mean_abs_diff_nats": float(diff.mean()),
          "logp_max_rel_diff": float((diff / np.abs(lp32)).max()),
          "loss_float32": l32, "loss_bfloat16": l16, "loss_rel_diff": abs(l16 - l32) / abs(l32),
          "grad_cosine": float(jnp.vdot(g32, g16) / jnp.linalg.norm(g32) / jnp.linalg.norm(g16)),
          "grad_norm_ratio": float(jnp.linalg.norm(g16) / jnp.linalg.norm(g32))}


def _untied_hf_t5(cfg, seed: int):
  """`_hf_t5` with its own lm_head tensor: transformers 5 ties it to the input
  embedding at construction, which would leave the PyTorch step 16M fewer
  parameters to update than T5.1.1 (and our model) has."""
  import torch  # pylint: disable=g-import-not-at-top
  hf = _hf_t5(cfg, seed)
  if hf.lm_head.weight is hf.shared.weight:
    hf.lm_head.weight = torch.nn.Parameter(hf.shared.weight.detach().clone())
  return hf


def bench_train(args) -> Json:
  import torch  # pylint: disable=g-import-not-at-top

  from alignment import config as config_lib  # pylint: disable=g-import-not-at-top
  from alignment import flops as flops_lib  # pylint: disable=g-import-not-at-top
  from alignment.models import convert, heads, zoo  # pylint: disable=g-import-not-at-top
  from alignment.train import state as state_lib  # pylint: disable=g-import-not-at-top
  from alignment.train import steps  # pylint: disable=g-import-not-at-top

  bandwidth = memory_bandwidth()
  peak = matmul_peak()
  b, lp, lr, beta = args.batch, args.prompt_len, args.response_len, 0.1
  # Policy and reference: two random HF T5s (the reference differs, so the
  # loss and its gradient are not trivial), converted to our parameters.
  hf_policy = _untied_hf_t5(zoo.get(args.model), seed=0).train()
  hf_reference = _untied_hf_t5(zoo.get(args.model), seed=1).eval()
  cfg = convert.config_from_hf(hf_policy.config.to_dict())
  # Copies: .numpy() shares the tensor's memory, which the PyTorch step's optimiser updates.
  to_ours = lambda hf: convert.params_from_hf(
      {k: v.detach().float().numpy().copy() for k, v in hf.state_dict().items()}, cfg)
  policy, reference = to_ours(hf_policy), to_ours(hf_reference)
  n_params = sum(v.size for v in jax.tree.leaves(policy))
  n_torch = sum(p.numel() for p in hf_policy.parameters())
  assert n_params == n_torch, (n_params, n_torch)
  pairs = _bench_pairs(cfg.vocab_size, b, lp, lr)
  opt_cfg = config_lib.optimizer_section()
  optimizer = state_lib.make_optimizer(opt_cfg)

  # -- contenders ------------------------------------------------------------
  calls: dict[str, Callable[[], Any]] = {}
  first: dict[str, dict] = {}
  model = heads.LanguageModel(cfg)
  loss_fns = {"ours": steps.alignment_loss_fn(model, "ipo", beta, "sum")}
  if args.ablate:
    loss_fns["ours/plain"] = _plain_alignment_loss_fn(model, beta)
  model16 = heads.LanguageModel(dataclasses.replace(cfg, dtype="bfloat16"))
  if args.bfloat16:  # float32 parameters and optimiser, bfloat16 activations and matmuls
    loss_fns["ours/bfloat16"] = steps.alignment_loss_fn(model16, "ipo", beta, "sum")
  compiled, compile_s = {}, {}
  for name, loss_fn in loss_fns.items():
    calls[name], compile_s[name], compiled[name], first[name] = _our_train_step(
        model, policy, reference, pairs, optimizer, loss_fn)
  torch_step, first["torch"] = _torch_train_step(hf_policy, hf_reference, pairs, beta, opt_cfg)
  for threads in args.torch_threads:
    def theirs(k=threads):
      torch.set_num_threads(k)
      return torch_step()
    calls[f"torch/{threads}"] = theirs
  matmuls = matmul_calls()
  for shape, (_, fn) in matmuls.items():
    calls[f"matmul/{shape}"] = fn
  matmuls16 = matmul_calls(dtype=jnp.bfloat16) if args.bfloat16 else {}
  for shape, (_, fn) in matmuls16.items():
    calls[f"matmul_bf16/{shape}"] = fn
  times = timed_interleaved(calls, args.repeats)
  peak_during = {shape: f / min(times[f"matmul/{shape}"]) / 1e9 for shape, (f, _) in matmuls.items()}
  peak_gflops = max(peak["gflops"], *peak_during.values())
  peak16 = {shape: f / min(times[f"matmul_bf16/{shape}"]) / 1e9
            for shape, (f, _) in matmuls16.items()}

  # -- figures ---------------------------------------------------------------
  model_flops = flops_lib.alignment_step(cfg, b, lp, lr, shared_prompt=True)
  tokens = b * (lp + 2 * lr)  # a prompt and its two responses per pair

  def summary(label, step_flops, peak=peak_gflops):
    med, best = statistics.median(times[label]), min(times[label])
    return {"median_s": med, "best_s": best, "times_s": times[label],
            "tokens_per_s": tokens / med, "model_gflops_per_s": step_flops / med / 1e9,
            "mfu": step_flops / med / 1e9 / peak,
            "mfu_of_fastest_run": step_flops / best / 1e9 / peak,
            "mfu_against": "float32 matmul peak" if peak == peak_gflops else
                           "bfloat16 matmul peak"}

  ours: Json = {}
  for name in loss_fns:
    c = compiled[name].cost_analysis()
    c = c[0] if isinstance(c, list) else c
    memory = compiled[name].memory_analysis()
    ours[name] = dict(summary(name, model_flops["total"],
                              max(peak16.values()) if name == "ours/bfloat16" else peak_gflops),
                      compile_s=compile_s[name],
                      xla_flops=float(c.get("flops", 0.0)),
                      temp_bytes=int(getattr(memory, "temp_size_in_bytes", 0)),
                      first_step=first[name])
  executed = flops_lib.alignment_step(cfg, b, lp, lr, shared_prompt=True)["total"]
  ours["ours"]["xla_flops_over_counted"] = ours["ours"]["xla_flops"] / executed
  if "ours/plain" in ours:
    plain = flops_lib.alignment_step(cfg, b, lp, lr, shared_prompt=False)["total"]
    ours["ours/plain"]["counted_flops_executed"] = plain
    ours["ours/plain"]["xla_flops_over_counted"] = ours["ours/plain"]["xla_flops"] / plain
  by_threads = {k: dict(summary(f"torch/{k}", model_flops["total"]), torch_threads=k)
                for k in args.torch_threads}
  best = min(by_threads, key=lambda k: by_threads[k]["median_s"])
  theirs = dict(by_threads[best], torch=torch.__version__, first_step=first["torch"],
                all_thread_counts={str(k): v for k, v in by_threads.items()})
  torch_fastest = min(v["best_s"] for v in by_threads.values())
  if args.bfloat16:
    ours["ours/bfloat16"].update(
        speedup_over_float32=ours["ours"]["median_s"] / ours["ours/bfloat16"]["median_s"],
        accuracy=_bfloat16_accuracy(model, model16, policy, reference, pairs, beta))
  return {"settings": {"model": args.model, "params": int(n_params), "vocab": cfg.vocab_size,
                       "pairs_per_batch": b, "prompt_len": lp, "response_len": lr,
                       "loss": "ipo", "beta": beta, "reduction": "sum",
                       "optimizer": dict(opt_cfg), "dtype": "float32",
                       "tokens_per_step": tokens, "repeats": args.repeats,
                       "statistic": "median", "jax_devices": len(jax.devices()),
                       "torch_threads_tried": args.torch_threads},
          "memory_bandwidth": bandwidth, "matmul_peak": peak,
          "matmul_peak_during_runs": peak_during, "peak_gflops_used": peak_gflops,
          "bfloat16_matmul_peak_during_runs": peak16,
          "model_flops": model_flops, "ours": ours, "torch": theirs,
          "speedup_over_torch": theirs["median_s"] / ours["ours"]["median_s"],
          "speedup_of_fastest_runs": torch_fastest / ours["ours"]["best_s"],
          "first_step_loss": {k: v["loss"] for k, v in first.items()},
          "first_step_grad_norm": {k: v["grad_norm"] for k, v in first.items()}}


def _train_args(p: argparse.ArgumentParser):
  p.add_argument("--model", default="t5-small", help="zoo T5 name")
  p.add_argument("--batch", type=int, default=8, help="preference pairs per step")
  p.add_argument("--prompt_len", type=int, default=64)
  p.add_argument("--response_len", type=int, default=32)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--ablate", action=argparse.BooleanOptionalAction, default=True,
                 help="also time the step as it was before the performance work")
  p.add_argument("--bfloat16", action=argparse.BooleanOptionalAction, default=True,
                 help="also time the step with bfloat16 activations (float32 parameters and "
                      "optimiser) and measure its distance from the float32 step")
  p.add_argument("--torch_threads", default=f"1,{os.cpu_count() or 1}",
                 type=lambda s: sorted({int(x) for x in s.split(",")}),
                 help="torch thread counts to try; the fastest is the baseline")


def _train_table(result: Json) -> str:
  s = result["settings"]
  rows = [f"{s['model']} ({s['params'] / 1e6:.1f}M), IPO, {s['pairs_per_batch']} pairs x "
          f"({s['prompt_len']} + 2 x {s['response_len']}) tokens, float32; medians of "
          "interleaved runs, MFU against the float32 matmul peak of the same run (the "
          "bfloat16 row: against the bfloat16 matmul peak)\n",
          "| step | s/step (median) | fastest | tokens/s | model GFLOP/s | MFU | MFU fastest |"
          " compile s |", "|---|---|---|---|---|---|---|---|"]
  entries = list(result["ours"].items()) + [
      (f"PyTorch {result['torch']['torch']} ({result['torch']['torch_threads']} threads)",
       result["torch"])]
  for name, o in entries:
    rows.append(f"| {name} | {o['median_s']:.3f} | {o['best_s']:.3f} | {o['tokens_per_s']:.0f} | "
                f"{o['model_gflops_per_s']:.0f} | {o['mfu'] * 100:.1f}% | "
                f"{o['mfu_of_fastest_run'] * 100:.1f}% | {_fmt(o.get('compile_s'), 1, '.1f')} |")
  mf = result["model_flops"]
  o = result["ours"]["ours"]
  rows.append(f"\nspeed-up over PyTorch: {result['speedup_over_torch']:.2f}x (medians), "
              f"{result['speedup_of_fastest_runs']:.2f}x (fastest runs)")
  rows.append(f"model FLOPs per step {mf['total'] / 1e9:.1f} G (policy fwd+bwd "
              f"{mf['policy'] / 1e9:.1f}, reference fwd {mf['reference'] / 1e9:.1f}); XLA cost "
              f"analysis {o['xla_flops'] / 1e9:.1f} G ({o['xla_flops_over_counted']:.3f}x)")
  rows.append(f"first-step loss: " + ", ".join(f"{k} {v:.6f}" for k, v in
                                               result["first_step_loss"].items()))
  bf = result["ours"].get("ours/bfloat16")
  if bf:
    a = bf["accuracy"]
    rows.append(f"bfloat16 activations: {bf['speedup_over_float32']:.2f}x the float32 step; "
                f"policy sequence log-probs within {a['logp_max_abs_diff_nats']:.3f} nats "
                f"(mean {a['logp_mean_abs_diff_nats']:.3f}, max relative "
                f"{a['logp_max_rel_diff']:.1e}), loss relative difference "
                f"{a['loss_rel_diff']:.1e}, gradient cosine {a['grad_cosine']:.4f}, norm ratio "
                f"{a['grad_norm_ratio']:.3f}; bfloat16 matmul peak "
                f"{max(result['bfloat16_matmul_peak_during_runs'].values()):.0f} GFLOP/s")
  rows.append(f"float32 matmul peak {result['peak_gflops_used']:.0f} GFLOP/s; load average "
              f"before/after: {result['load_average_before']} / {result['load_average_after']}")
  return "\n".join(rows)


# --------------------------------------------------------------------------
# online
# --------------------------------------------------------------------------


def _load_config(spec: str):
  """A config file given relative to the working directory or to the repository."""
  from alignment import config as config_lib  # pylint: disable=g-import-not-at-top
  path, _, arg = spec.partition(":")
  if not os.path.exists(path):
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))), path)
  return config_lib.load(f"{path}:{arg}")


def bench_online(args) -> Json:
  """One online step at a config's scale, phase by phase, over `repeats` steps.

  The policy and the reference start from the same random initialisation and
  the proxy PM is random too: no export is needed. A random policy emits EOS
  only by chance, so responses run close to the full length (the mean length is
  reported; a trained policy stops earlier). Prompts come from the config's task.
  Reference scoring is fused into the update's program in the real step; it is
  timed here as its own jitted forward on the same pairs, to show its share,
  and not added to the step.
  """
  from alignment import judges, sharding  # pylint: disable=g-import-not-at-top
  from alignment.data import pipeline  # pylint: disable=g-import-not-at-top
  from alignment.models import heads  # pylint: disable=g-import-not-at-top
  from alignment.data import tasks, vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  from alignment.models import zoo  # pylint: disable=g-import-not-at-top
  from alignment import algorithms  # pylint: disable=g-import-not-at-top
  from alignment.train import online, roles, steps  # pylint: disable=g-import-not-at-top
  from alignment.train import state as state_lib  # pylint: disable=g-import-not-at-top

  config, pm_config = _load_config(args.config), _load_config(args.pm_config)
  distributed.setup_host()
  mesh, rules = sharding.mesh_and_rules(config.mesh)
  d = config.data
  vocab = tasks.task_vocabulary(d.task)
  vocab_size = vocab_lib.model_vocab_size(vocab)
  model_cfg = zoo.from_section(config.model, vocab_size)
  model = heads.LanguageModel(model_cfg)
  prompts = pipeline.make_iterator(
      d.task, "train", "prompts", d.batch_size, prompt_length=d.prompt_len,
      response_length=d.response_len, mesh=mesh, rules=rules, seed=d.shuffle_seed)
  optimizer = state_lib.make_optimizer(config.optimizer)
  init = heads.init_fn(model, d.prompt_len, d.response_len)
  state, state_shardings = state_lib.create(init, optimizer, mesh, rules, config.seed)
  reference = roles.Reference(config, model, mesh, mesh, rules, state_shardings.params)
  ref_params = reference.params
  pm = heads.PairwisePreferenceModel(zoo.from_section(pm_config.model, vocab_size))
  pm_params, _ = sharding.create_sharded(heads.init_fn(pm, d.prompt_len, d.response_len),
                                         mesh, rules, jax.random.PRNGKey(1))
  judge = judges.ModelJudge(pm, pm_params, mesh, rules)
  phases = online.make_phases(config, model, judge, reference, optimizer, state_shardings,
                              mesh, rules)
  to_pairs = jax.jit(algorithms.pairs_from_samples)
  reference_scores = jax.jit(lambda ref, pairs: steps.pair_logps(model, ref, pairs,
                                                                 config.loss.reduction))

  times: dict[str, list] = {k: [] for k in ("sample", "judge", "update", "step",
                                            "reference_scoring")}
  lengths = []
  for i in range(args.warmup + args.repeats):
    batch = next(prompts)
    t0 = time.perf_counter()
    out = jax.block_until_ready(phases.sample(state.params, batch, i))
    t1 = time.perf_counter()
    _, verdict = jax.block_until_ready(phases.judge(batch, out, i))
    t2 = time.perf_counter()
    state, metrics, _ = phases.update(state, out, verdict)
    jax.block_until_ready(metrics)
    t3 = time.perf_counter()
    with sharding.use(mesh, rules):
      pairs = to_pairs(out, verdict.first_wins)
      t4 = time.perf_counter()
      jax.block_until_ready(reference_scores(ref_params, pairs))
    t5 = time.perf_counter()
    if i >= args.warmup:
      for k, v in (("sample", t1 - t0), ("judge", t2 - t1), ("update", t3 - t2),
                   ("step", t3 - t0), ("reference_scoring", t5 - t4)):
        times[k].append(v)
      lengths.append(float(np.mean(np.asarray(out.lengths))))
  med = {k: statistics.median(v) for k, v in times.items()}
  rows = 2 * d.batch_size
  return {"settings": {"config": args.config, "pm_config": args.pm_config,
                       "policy": config.model.name, "proxy_pm": pm_config.model.name,
                       "vocab": vocab_size, "prompts_per_step": d.batch_size,
                       "samples_per_prompt": 2, "prompt_len": d.prompt_len,
                       "response_len": d.response_len, "loss": config.loss.name,
                       "cache_dtype": config.sampling.cache_dtype,
                       "warmup_steps": args.warmup, "steps": args.repeats,
                       "statistic": "median", "jax_devices": len(jax.devices())},
          "times_s": times, "median_s": med,
          "share": {k: med[k] / med["step"] for k in ("sample", "judge", "update")},
          "reference_scoring_share_of_update": med["reference_scoring"] / med["update"],
          "sampled_tokens_per_s": rows * statistics.mean(lengths) / med["sample"],
          "mean_response_length": statistics.mean(lengths)}


def _online_args(p: argparse.ArgumentParser):
  p.add_argument("--config", default="configs/online.py:default")
  p.add_argument("--pm_config", default="configs/pm.py:default",
                 help="the proxy PM's size comes from this config's model")
  p.add_argument("--warmup", type=int, default=2, help="steps before timing (compiles)")
  p.add_argument("--repeats", type=int, default=10, help="timed steps")


def _online_table(result: Json) -> str:
  s, med, share = result["settings"], result["median_s"], result["share"]
  rows = [f"{s['config']}: {s['policy']} policy, {s['proxy_pm']} proxy PM, "
          f"{s['prompts_per_step']} prompts x 2 samples, {s['prompt_len']} + "
          f"{s['response_len']} tokens; medians over {s['steps']} steps\n",
          "| phase | ms (median) | share of the step |", "|---|---|---|"]
  for k in ("sample", "judge", "update"):
    rows.append(f"| {k} | {med[k] * 1e3:.1f} | {share[k] * 100:.1f}% |")
  rows.append(f"| step | {med['step'] * 1e3:.1f} | 100% |")
  rows.append(f"| (reference scoring, inside update) | {med['reference_scoring'] * 1e3:.1f} | "
              f"{result['reference_scoring_share_of_update'] * 100:.0f}% of update if alone |")
  rows.append(f"\nsampled {result['sampled_tokens_per_s']:.0f} tokens/s (mean response "
              f"length {result['mean_response_length']:.1f}); load average before/after: "
              f"{result['load_average_before']} / {result['load_average_after']}")
  return "\n".join(rows)


# --------------------------------------------------------------------------
# profile (of the train step)
# --------------------------------------------------------------------------

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


def op_profile(compiled, run: Callable[[], Any], steps: int, trace_dir: str) -> Json:
  """Time per op category of a compiled program over `steps` calls, from a jax.profiler trace.

  XLA:CPU records each executed HLO op as a trace event; op times are summed
  per category (ops of one step can run concurrently, so their sum may exceed
  the program's wall time, reported apart).
  """
  import glob  # pylint: disable=g-import-not-at-top
  import gzip  # pylint: disable=g-import-not-at-top
  kinds = hlo_op_kinds(compiled.as_text())
  jax.profiler.start_trace(trace_dir)
  for _ in range(steps):
    run()
  jax.profiler.stop_trace()
  path = sorted(glob.glob(os.path.join(trace_dir, "plugins/profile/*/*.trace.json.gz")))[-1]
  with gzip.open(path) as f:
    events = [e for e in json.load(f)["traceEvents"] if e.get("ph") == "X"]
  ms, gflop = {}, {}
  for e in events:
    if e["name"] in kinds:
      kind, flops = kinds[e["name"]]
      ms[kind] = ms.get(kind, 0.0) + e["dur"] / 1e3 / steps
      gflop[kind] = gflop.get(kind, 0.0) + flops / 1e9 / steps
  wall = sum(e["dur"] for e in events if e["name"] == "ThunkExecutor::Execute (wait for "
             "completion)") / 1e3 / steps
  total = sum(ms.values())
  dots = [rhs for rhs in re.findall(r"= (\S+) dot\(", compiled.as_text())]
  return {"program_wall_ms": wall, "op_ms": total, "trace": path,
          "dots_by_output_type": {t: sum(d.startswith(t + "[") for d in dots)
                                  for t in sorted({d.split("[")[0] for d in dots})},
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
  from alignment.train import state as state_lib  # pylint: disable=g-import-not-at-top
  from alignment.train import steps as steps_lib  # pylint: disable=g-import-not-at-top

  b, lp, lr, beta = args.batch, args.prompt_len, args.response_len, 0.1
  hf = [_untied_hf_t5(zoo.get(args.model), seed=s) for s in (0, 1)]
  cfg = convert.config_from_hf(hf[0].config.to_dict())
  policy, reference = (convert.params_from_hf(
      {k: v.detach().float().numpy().copy() for k, v in h.state_dict().items()}, cfg)
                       for h in hf)
  pairs = _bench_pairs(cfg.vocab_size, b, lp, lr)
  optimizer = state_lib.make_optimizer(config_lib.optimizer_section())
  out = {}
  for dtype in args.dtypes:
    model = heads.LanguageModel(dataclasses.replace(cfg, dtype=dtype))
    run, _, compiled, _ = _our_train_step(model, policy, reference, pairs, optimizer,
                                          steps_lib.alignment_loss_fn(model, "ipo", beta, "sum"))
    step_s = statistics.median(timed(run, args.steps))
    out[dtype] = dict(op_profile(compiled, run, args.steps, os.path.join(args.trace_dir, dtype)),
                      step_s=step_s)
  return {"settings": {"model": args.model, "pairs_per_batch": b, "prompt_len": lp,
                       "response_len": lr, "loss": "ipo", "steps": args.steps},
          "model_flops": flops_lib.alignment_step(cfg, b, lp, lr)["total"], "profiles": out}


def _profile_args(p: argparse.ArgumentParser):
  p.add_argument("--model", default="t5-small", help="zoo T5 name")
  p.add_argument("--batch", type=int, default=8, help="preference pairs per step")
  p.add_argument("--prompt_len", type=int, default=64)
  p.add_argument("--response_len", type=int, default=32)
  p.add_argument("--dtypes", default="float32,bfloat16", type=lambda s: s.split(","),
                 help="activation dtypes to profile")
  p.add_argument("--steps", type=int, default=3, help="steps timed, then traced")
  p.add_argument("--trace_dir", default="/tmp/alignment_profile",
                 help="where jax.profiler writes its traces (TensorBoard/Perfetto)")


def _profile_table(result: Json) -> str:
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
                  f"{_fmt(c['gflops_while_running'], 1, '.0f')} |")
  return "\n".join(rows)


# name -> (add flags, run, format a table)
BENCHMARKS: dict[str, tuple[Callable, Callable, Callable]] = {
    "sampler": (_sampler_args, bench_sampler, _sampler_table),
    "train": (_train_args, bench_train, _train_table),
    "online": (_online_args, bench_online, _online_table),
    "profile": (_profile_args, bench_profile, _profile_table),
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
  files.write_json(args.json, result, sort_keys=False)
  print(table(result))
  print(f"wrote {args.json}")
  return 0
