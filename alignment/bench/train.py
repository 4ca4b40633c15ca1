"""The train benchmark: our IPO step against the same step in PyTorch on Hugging Face T5.

Policy and reference in one program, against PyTorch doing the same work,
eager and under `torch.compile` (`--no-torch_compile` leaves that out); also,
by default, the step as it was before the performance work (an
ablation) and the step with bfloat16 activations, with its distance from the
float32 step; with `--xla_option`, the float32 step compiled again with other XLA
options (e.g. another kernel library for its dots), timed in the same interleaved
runs. The random preference pairs and the step's harness are shared with the
profile benchmark.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import re
import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from alignment.bench.measure import (Json, fmt, matmul_calls, matmul_peak, memory_bandwidth,
                                     timed_interleaved, up_front)
from alignment.bench.torch_reference import torch_train_step, untied_hf_t5


def bench_pairs(vocab: int, batch: int, prompt_len: int, response_len: int, seed: int = 2):
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
    pc, pr = pair_logps(params, batch.pairs)
    rc, rr = pair_logps(jax.lax.stop_gradient(batch.ref_params), batch.pairs)
    rc, rr = jax.lax.stop_gradient(rc), jax.lax.stop_gradient(rr)
    return jnp.mean(losses.ipo(pc, pr, rc, rr, beta)), {}

  return loss_fn


def our_train_step(model, policy, reference, pairs, opt_cfg, loss_fn, compiler_options=None):
  """(a call that runs one step and blocks, compile seconds, compiled, first metrics).
  opt_cfg: the `optimizer` section; its learning rate is the step's input.
  compiler_options: XLA options the step is compiled with (`--xla_option`)."""
  from alignment import sharding  # pylint: disable=g-import-not-at-top
  from alignment.models import heads  # pylint: disable=g-import-not-at-top
  from alignment.train import state as state_lib  # pylint: disable=g-import-not-at-top
  from alignment.train import steps  # pylint: disable=g-import-not-at-top
  mesh = sharding.make_mesh({"data": 1}, jax.devices()[:1])
  rules = sharding.DEFAULT_RULES
  init = heads.init_fn(model, pairs.prompt.shape[1], pairs.chosen.shape[1])
  state, state_shardings = state_lib.create(init, state_lib.make_optimizer(opt_cfg), mesh,
                                            rules, 0)
  state = state.replace(params=jax.device_put(policy, state_shardings.params))
  batch = steps.AlignmentInput(jax.device_put(pairs),
                               ref_params=jax.device_put(reference, state_shardings.params))
  batch_shardings = steps.AlignmentInput(sharding.batch_shardings(pairs, mesh, rules),
                                         ref_params=state_shardings.params)
  step = state_lib.make_step(loss_fn, opt_cfg, state_shardings, batch_shardings, mesh, rules)
  start = time.perf_counter()
  compiled = step.lower(state, batch).compile(compiler_options=compiler_options)
  compile_s = time.perf_counter() - start
  box = [state]
  rate = jax.device_put(np.float32(step.learning_rate), sharding.replicated(mesh))

  def run():
    box[0], metrics = compiled(box[0], batch, rate)
    return jax.block_until_ready(metrics)

  first = {k: float(v) for k, v in run().items()}
  return run, compile_s, compiled, first


def _bfloat16_accuracy(model32, model16, policy, reference, pairs, beta: float) -> Json:
  """How far the bfloat16-activation step is from the float32 one, on the same batch.

  Sequence log-probs of the policy (nats, summed over a response), the loss,
  and the gradient (cosine and norm ratio): the figures to judge whether
  bfloat16 keeps the accuracy a run needs.
  """
  from alignment.train import steps  # pylint: disable=g-import-not-at-top
  batch = steps.AlignmentInput(pairs, ref_params=reference)
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


@dataclasses.dataclass(frozen=True)
class _TrainSetup:
  """The step every contender takes: the same weights in both frameworks, one batch."""
  cfg: Any  # our model config, converted from the HF policy's
  hf_policy: Any
  hf_reference: Any
  policy: Any  # our parameters: copies of the HF weights
  reference: Any
  n_params: int
  pairs: Any
  opt_cfg: Any  # the `optimizer` section both frameworks' steps follow


def _train_setup(args) -> _TrainSetup:
  """Policy and reference: two random HF T5s (the reference differs, so the
  loss and its gradient are not trivial), converted to our parameters."""
  from alignment import config as config_lib  # pylint: disable=g-import-not-at-top
  from alignment.models import convert, zoo  # pylint: disable=g-import-not-at-top
  hf_policy = untied_hf_t5(zoo.get(args.model), seed=0).train()
  hf_reference = untied_hf_t5(zoo.get(args.model), seed=1).eval()
  cfg = convert.config_from_hf(hf_policy.config.to_dict())
  # Copies: .numpy() shares the tensor's memory, which the PyTorch step's optimiser updates.
  to_ours = lambda hf: convert.params_from_hf(
      {k: v.detach().float().numpy().copy() for k, v in hf.state_dict().items()}, cfg)
  policy, reference = to_ours(hf_policy), to_ours(hf_reference)
  n_params = sum(v.size for v in jax.tree.leaves(policy))
  n_torch = sum(p.numel() for p in hf_policy.parameters())
  assert n_params == n_torch, (n_params, n_torch)
  pairs = bench_pairs(cfg.vocab_size, args.batch, args.prompt_len, args.response_len)
  return _TrainSetup(cfg, hf_policy, hf_reference, policy, reference, n_params, pairs,
                     config_lib.optimizer_section())


@dataclasses.dataclass(frozen=True)
class _OurSteps:
  """Our step's variants, compiled, each a call that runs one step and blocks."""
  model: Any  # float32 activations
  model16: Any  # bfloat16 activations (float32 parameters and optimiser)
  calls: dict[str, Callable[[], Any]]
  compile_s: dict[str, float]
  compiled: dict[str, Any]
  first: dict[str, dict]  # each variant's first-step metrics


def _our_steps(args, setup: _TrainSetup, beta: float) -> _OurSteps:
  """The step, and as asked the step before the performance work and the bfloat16 one."""
  from alignment.models import heads  # pylint: disable=g-import-not-at-top
  from alignment.train import steps  # pylint: disable=g-import-not-at-top
  model = heads.LanguageModel(setup.cfg)
  loss_fns = {"ours": steps.alignment_loss_fn(model, "ipo", beta, "sum")}
  if args.ablate:
    loss_fns["ours/plain"] = _plain_alignment_loss_fn(model, beta)
  model16 = heads.LanguageModel(dataclasses.replace(setup.cfg, dtype="bfloat16"))
  if args.bfloat16:  # float32 parameters and optimiser, bfloat16 activations and matmuls
    loss_fns["ours/bfloat16"] = steps.alignment_loss_fn(model16, "ipo", beta, "sum")
  options = {"ours": None}
  for label, opts in args.xla_option:  # the float32 step compiled with other XLA options
    if f"ours/{label}" in loss_fns:
      raise ValueError(f"--xla_option={label}:...: the row ours/{label} is already taken "
                       "(each label once; plain and bfloat16 are the ablation's)")
    loss_fns[f"ours/{label}"], options[f"ours/{label}"] = loss_fns["ours"], opts
  calls, compile_s, compiled, first = {}, {}, {}, {}
  for name, loss_fn in loss_fns.items():
    calls[name], compile_s[name], compiled[name], first[name] = our_train_step(
        model, setup.policy, setup.reference, setup.pairs, setup.opt_cfg, loss_fn,
        options.get(name))
  return _OurSteps(model, model16, calls, compile_s, compiled, first)


def xla_option(text: str) -> tuple[str, dict]:
  """`LABEL:KEY=VALUE[,KEY=VALUE...]` -> (LABEL, {KEY: VALUE}): a row `ours/LABEL`, the
  float32 step compiled with those XLA options (a debug option's name, as XLA_FLAGS
  spells it without its dashes; an enum by its full name, e.g.
  xla_cpu_experimental_xnn_fusion_type=LIBRARY_FUSION_TYPE_DOT). true/false are
  booleans, whole numbers integers. Checked by compiling a one-op program with them, so
  an option XLA does not know, or a value it refuses, is an error before anything runs."""
  label, colon, pairs = text.partition(":")
  if not colon or not label or not pairs or "/" in label:
    raise argparse.ArgumentTypeError(
        f"{text!r}: expected LABEL:KEY=VALUE[,KEY=VALUE...] (a label without '/')")
  opts = {}
  for pair in pairs.split(","):
    key, eq, value = pair.partition("=")
    if not eq or not key:
      raise argparse.ArgumentTypeError(f"{text!r}: {pair!r} is not KEY=VALUE")
    low = value.lower()
    opts[key] = (low == "true" if low in ("true", "false") else
                 int(value) if re.fullmatch(r"-?\d+", value) else value)
  try:
    jax.jit(lambda x: x + 1).lower(np.float32(0)).compile(compiler_options=opts)
  except Exception as e:  # pylint: disable=broad-except  (XLA's status errors)
    raise argparse.ArgumentTypeError(
        f"{text!r}: XLA refuses {opts}: {str(e).strip().splitlines()[0]}") from None
  return label, opts


def _torch_calls(args, setup: _TrainSetup, beta: float) -> tuple[dict, dict, dict]:
  """The same step in PyTorch, one call per thread count tried, and as asked
  the step under `torch.compile` at the most threads tried (inductor writes the
  thread count into its kernels), on its own copy of the starting policy;
  (calls, first metrics of each, compile seconds of the compiled one)."""
  import torch  # pylint: disable=g-import-not-at-top
  start_policy = copy.deepcopy(setup.hf_policy) if args.torch_compile else None  # fresh weights
  torch_step, first = torch_train_step(setup.hf_policy, setup.hf_reference, setup.pairs, beta,
                                       setup.opt_cfg)
  calls, firsts, compile_s = {}, {"torch": first}, {}
  for threads in args.torch_threads:
    def theirs(k=threads):
      torch.set_num_threads(k)
      return torch_step()
    calls[f"torch/{threads}"] = theirs
  if args.torch_compile:
    threads = max(args.torch_threads)
    torch.set_num_threads(threads)
    start = time.perf_counter()
    compiled_step, firsts["torch/compiled"] = torch_train_step(
        start_policy, setup.hf_reference, setup.pairs, beta, setup.opt_cfg,
        compile_backend=args.compile_backend)
    compile_s["torch/compiled"] = time.perf_counter() - start

    def theirs_compiled(k=threads):
      torch.set_num_threads(k)
      return compiled_step()
    calls[f"torch-compiled/{threads}"] = theirs_compiled
  return calls, firsts, compile_s


@dataclasses.dataclass(frozen=True)
class _Timings:
  """The interleaved runs' times, and the matmul peaks measured among them."""
  times: dict[str, list]
  tokens: int  # per step
  peak_during: dict[str, float]  # float32 GFLOP/s per matmul shape
  peak_gflops: float  # the float32 peak MFU is against: up front or during, the higher
  peak16: dict[str, float]  # bfloat16 GFLOP/s per matmul shape

  def summary(self, label: str, step_flops: float, peak: float | None = None) -> Json:
    """Medians (the headline), the fastest run, and the MFU of both against `peak`."""
    peak = self.peak_gflops if peak is None else peak
    med, best = statistics.median(self.times[label]), min(self.times[label])
    return {"median_s": med, "best_s": best, "times_s": self.times[label],
            "tokens_per_s": self.tokens / med, "model_gflops_per_s": step_flops / med / 1e9,
            "mfu": step_flops / med / 1e9 / peak,
            "mfu_of_fastest_run": step_flops / best / 1e9 / peak,
            "mfu_against": "float32 matmul peak" if peak == self.peak_gflops else
                           "bfloat16 matmul peak"}


def _timed_with_matmuls(calls: dict, args, peak: Json) -> _Timings:
  """Times the contenders interleaved with matmuls, so the peak each MFU is
  against is measured under the same load as the steps."""
  calls = dict(calls)
  matmuls = matmul_calls()
  for shape, (_, fn) in matmuls.items():
    calls[f"matmul/{shape}"] = fn
  matmuls16 = matmul_calls(dtype=jnp.bfloat16) if args.bfloat16 else {}
  for shape, (_, fn) in matmuls16.items():
    calls[f"matmul_bf16/{shape}"] = fn
  times = timed_interleaved(calls, args.repeats)
  peak_during = {shape: f / min(times[f"matmul/{shape}"]) / 1e9
                 for shape, (f, _) in matmuls.items()}
  peak_gflops = max(peak["gflops"], *peak_during.values())
  peak16 = {shape: f / min(times[f"matmul_bf16/{shape}"]) / 1e9
            for shape, (f, _) in matmuls16.items()}
  tokens = args.batch * (args.prompt_len + 2 * args.response_len)  # a prompt, two responses
  return _Timings(times, tokens, peak_during, peak_gflops, peak16)


def _our_figures(args, ours_steps: _OurSteps, timed: _Timings, cfg, model_flops: Json) -> Json:
  """Each variant's times and MFU, its compile seconds, and XLA's own FLOPs and
  temporaries (with how XLA's FLOPs compare with ours counted)."""
  from alignment import flops as flops_lib  # pylint: disable=g-import-not-at-top
  b, lp, lr = args.batch, args.prompt_len, args.response_len
  ours: Json = {}
  for name, compiled in ours_steps.compiled.items():
    c = compiled.cost_analysis()
    c = c[0] if isinstance(c, list) else c
    memory = compiled.memory_analysis()
    peak = max(timed.peak16.values()) if name == "ours/bfloat16" else timed.peak_gflops
    ours[name] = dict(timed.summary(name, model_flops["total"], peak),
                      compile_s=ours_steps.compile_s[name],
                      xla_flops=float(c.get("flops", 0.0)),
                      xla_bytes_accessed=float(c.get("bytes accessed", 0.0)),
                      temp_bytes=int(getattr(memory, "temp_size_in_bytes", 0)),
                      first_step=ours_steps.first[name])
  executed = flops_lib.alignment_step(cfg, b, lp, lr, shared_prompt=True)["total"]
  ours["ours"]["xla_flops_over_counted"] = ours["ours"]["xla_flops"] / executed
  if "ours/plain" in ours:
    plain = flops_lib.alignment_step(cfg, b, lp, lr, shared_prompt=False)["total"]
    ours["ours/plain"]["counted_flops_executed"] = plain
    ours["ours/plain"]["xla_flops_over_counted"] = ours["ours/plain"]["xla_flops"] / plain
  return ours


def _torch_figures(args, timed: _Timings, step_flops: float, first: dict) -> Json:
  """Each thread count's times; the fastest (by median) is the baseline."""
  import torch  # pylint: disable=g-import-not-at-top
  by_threads = {k: dict(timed.summary(f"torch/{k}", step_flops), torch_threads=k)
                for k in args.torch_threads}
  best = min(by_threads, key=lambda k: by_threads[k]["median_s"])
  return dict(by_threads[best], torch=torch.__version__, first_step=first,
              all_thread_counts={str(k): v for k, v in by_threads.items()})


def _torch_compiled_figures(args, timed: _Timings, step_flops: float, first: dict,
                            compile_s: float) -> Json:
  """The `torch.compile`d step's times, at the thread count it was compiled at."""
  import torch  # pylint: disable=g-import-not-at-top
  threads = max(args.torch_threads)
  return dict(timed.summary(f"torch-compiled/{threads}", step_flops), torch_threads=threads,
              torch=torch.__version__, first_step=first, compile_s=compile_s,
              backend=args.compile_backend,
              mode="loss (forwards, backward by AOTAutograd) and clip + AdamW, each under "
                   "torch.compile")


def bench_train(args) -> Json:
  # Loaded before anything is measured, as it always was (its native runtime with it).
  import torch  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import

  from alignment import flops as flops_lib  # pylint: disable=g-import-not-at-top

  bandwidth = up_front(args, "memory_bandwidth", memory_bandwidth)
  peak = up_front(args, "matmul_peak", matmul_peak)
  b, lp, lr, beta = args.batch, args.prompt_len, args.response_len, 0.1
  setup = _train_setup(args)
  ours_steps = _our_steps(args, setup, beta)
  torch_calls, torch_first, torch_compile_s = _torch_calls(args, setup, beta)
  first = dict(ours_steps.first, **torch_first)
  timed = _timed_with_matmuls({**ours_steps.calls, **torch_calls}, args, peak)
  model_flops = flops_lib.alignment_step(setup.cfg, b, lp, lr, shared_prompt=True)
  ours = _our_figures(args, ours_steps, timed, setup.cfg, model_flops)
  theirs = _torch_figures(args, timed, model_flops["total"], first["torch"])
  torch_fastest = min(v["best_s"] for v in theirs["all_thread_counts"].values())
  compared = {}
  if args.torch_compile:
    compiled = _torch_compiled_figures(args, timed, model_flops["total"],
                                       first["torch/compiled"], torch_compile_s["torch/compiled"])
    compared = {"torch_compiled": compiled,
                "speedup_over_torch_compiled": compiled["median_s"] / ours["ours"]["median_s"],
                "speedup_over_torch_compiled_of_fastest_runs":
                    compiled["best_s"] / ours["ours"]["best_s"]}
  if args.bfloat16:
    ours["ours/bfloat16"].update(
        speedup_over_float32=ours["ours"]["median_s"] / ours["ours/bfloat16"]["median_s"],
        accuracy=_bfloat16_accuracy(ours_steps.model, ours_steps.model16, setup.policy,
                                    setup.reference, setup.pairs, beta))
  return {"settings": {"model": args.model, "params": int(setup.n_params),
                       "vocab": setup.cfg.vocab_size,
                       "pairs_per_batch": b, "prompt_len": lp, "response_len": lr,
                       "loss": "ipo", "beta": beta, "reduction": "sum",
                       "optimizer": dict(setup.opt_cfg), "dtype": "float32",
                       "tokens_per_step": timed.tokens, "repeats": args.repeats,
                       "statistic": "median", "jax_devices": len(jax.devices()),
                       "torch_threads_tried": args.torch_threads},
          "memory_bandwidth": bandwidth, "matmul_peak": peak,
          "matmul_peak_during_runs": timed.peak_during, "peak_gflops_used": timed.peak_gflops,
          "bfloat16_matmul_peak_during_runs": timed.peak16,
          "model_flops": model_flops, "ours": ours, "torch": theirs, **compared,
          "speedup_over_torch": theirs["median_s"] / ours["ours"]["median_s"],
          "speedup_of_fastest_runs": torch_fastest / ours["ours"]["best_s"],
          "first_step_loss": {k: v["loss"] for k, v in first.items()},
          "first_step_grad_norm": {k: v["grad_norm"] for k, v in first.items()}}


def train_args(p: argparse.ArgumentParser):
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
  p.add_argument("--torch_compile", action=argparse.BooleanOptionalAction, default=True,
                 help="also time the PyTorch step under torch.compile, at the most threads of "
                      "--torch_threads")
  p.add_argument("--compile_backend", default="inductor",
                 help="torch.compile's backend for that step (the tests' toy run: eager)")
  p.add_argument("--xla_option", type=xla_option, action="append", default=[],
                 metavar="LABEL:KEY=VALUE[,KEY=VALUE]",
                 help="also time our float32 step compiled with these XLA options, as row "
                      "ours/LABEL, interleaved with the others (repeatable); e.g. "
                      "xnn:xla_cpu_experimental_xnn_fusion_type=LIBRARY_FUSION_TYPE_DOT")


def train_table(result: Json) -> str:
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
  tc = result.get("torch_compiled")
  if tc:
    entries.append((f"PyTorch {tc['torch']}, torch.compile ({tc['torch_threads']} threads)", tc))
  for name, o in entries:
    rows.append(f"| {name} | {o['median_s']:.3f} | {o['best_s']:.3f} | {o['tokens_per_s']:.0f} | "
                f"{o['model_gflops_per_s']:.0f} | {o['mfu'] * 100:.1f}% | "
                f"{o['mfu_of_fastest_run'] * 100:.1f}% | {fmt(o.get('compile_s'), 1, '.1f')} |")
  mf = result["model_flops"]
  o = result["ours"]["ours"]
  rows.append(f"\nspeed-up over PyTorch: {result['speedup_over_torch']:.2f}x (medians), "
              f"{result['speedup_of_fastest_runs']:.2f}x (fastest runs)")
  if tc:
    rows.append(f"speed-up over PyTorch under torch.compile: "
                f"{result['speedup_over_torch_compiled']:.2f}x (medians), "
                f"{result['speedup_over_torch_compiled_of_fastest_runs']:.2f}x (fastest runs)")
  rows.append(f"model FLOPs per step {mf['total'] / 1e9:.1f} G (policy fwd+bwd "
              f"{mf['policy'] / 1e9:.1f}, reference fwd {mf['reference'] / 1e9:.1f}); XLA cost "
              f"analysis {o['xla_flops'] / 1e9:.1f} G ({o['xla_flops_over_counted']:.3f}x)")
  rows.append("first-step loss: " + ", ".join(f"{k} {v:.6f}" for k, v in
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
