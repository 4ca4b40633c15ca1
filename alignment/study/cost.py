"""What a study will cost before it runs: `python -m alignment.study ... --plan`.

    python -m alignment.study --config=configs/study.py:default --workdir=runs/study --plan
    python -m alignment.study --config=configs/study.py:full --workdir=runs/full --plan --peak=213

prints every stage the study would run, in order, with its estimated wall time on
this machine and whether it is already done in the workdir (its STAGE.json carries
the hash the runner would compute, as `runner` decides "done (cached)"), then the
totals, and runs nothing. The estimate is per stage:

  seconds = [fixed + compile + steps x overhead + points x eval overhead] x (213 / peak)
            + model FLOPs of the stage / (peak x EFFICIENCY)

- model FLOPs: `alignment.flops` for the stage's model (T5 or decoder-only) and
  shapes: SFT a forward and backward; the PM its pairwise forward (prompt and both
  responses encoded) and backward; an offline step `flops.alignment_step`; an online
  step that, its sampling (k responses per prompt) and its judge (the judge stage's
  model, k (k - 1) pairwise passes or k reward passes; the golden program none); an
  evaluation point its samples (win, KL and the proxy's second sample), the KL and
  classifier forwards and the proxy's four passes per prompt; pair sets their samples
  (or the PM's relabelling).
- EFFICIENCY = 0.5: the share of the float32 matmul peak the model's matmuls reach
  once they are large; the train benchmark's IPO step at t5-small reached 48-50% of
  the peak measured beside it (BENCHMARKS.md). One efficiency for every kind, and an
  overhead beside it, rather than a per-kind efficiency fitted at t5-tiny (14-23% of
  the peak): that would price every larger model at t5-tiny's dispatch-bound speed.
  Measured side by side under the same load, a t5-mini PM took 2.4 times a t5-tiny
  PM's time; this model says 2.2, FLOPs alone 5.3.
- overhead: the rest of a measured t5-tiny step (dispatch, elementwise ops, the data
  pipeline, host transfers): the measured step less its FLOP time at EFFICIENCY,
  per kind and per online phase, scaled by the step's tokens (batch x (prompt +
  response)) and, online, by the samples or judge passes per prompt. At t5-tiny it
  is 58-71% of a step; in a t5-midi SFT step 6%.
- fixed, compile: time outside the steps (loading, the evaluator's set-up, the final
  evaluation, the export) and the first step's extra time, which is compilation the
  first time a study meets a (kind, model, shapes) and a read of XLA's persistent
  cache after that (the runner keeps one per workdir).
- every non-FLOP term scales with 213 / peak: a machine whose matmuls run at half the
  peak is taken to be half as fast at everything (so a peak measured under load
  prices the load in).

The constants are measurements of this 2-core machine on 2026-12-06 at a float32
matmul peak of 213 GFLOP/s (`CAL`): the default study of README's "What the default
study shows today" (each stage's STAGE.json seconds and its metrics.jsonl step
times), and for the cached compile and the second evaluation stage the redrawn
foundation (f1/) of the full study run the same day. Measured accuracy
(tests/study/test_cost.py holds the numbers): within `ACCURACY` (6%) of every stage
of that default study, and within `ACCURACY_RERUN` (15%) of the same kinds of stage
rerun (a seed-1 default study, the full study's f1/ foundation). Larger models are
extrapolated by their FLOPs; they were measured only with other work on the CPU
(t5-mini SFT and PM, PMs on other pair sets, online runs judged by the t5-mini PM):
the estimates are 21-41% below those loaded times, as they should be below them.

Converting a task's records, the first time this machine meets a (task, seed,
lengths), is priced apart as "up to" (`CONVERT_S`): `pipeline.load_records` keeps
them per machine, which the plan cannot see.

What is not modelled (the study's start-up, a stage resumed halfway, a decoder-only
model's own overheads) and how the tpu scale's chip-hours and memory per chip are
counted (`TPU_CHIP`, `TPU_CHIPS`, `DECODE_WEIGHT_READS`): docs/study.md, "Before the
run: --plan".

The table and the command are `alignment.study.__main__`'s (`plan`, `render`). Both
modules are tools: no stage runs them, so `stages.CODE_EXCLUDED` leaves them out of
the code digest.
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Optional

from alignment import aot, flops
from alignment import config as config_lib
from alignment.models import zoo
from alignment.study.stages import Stage

# -- calibration ---------------------------------------------------------------
# Measured on this machine (2 cores), 2026-12-06, float32 matmul peak 213 GFLOP/s, nothing
# else running: the default study (t5-tiny policy and PM, batch 32, prompt 40 + response 32
# tokens, 7 evaluation points per run on 512 win, 256 KL, 256 proxy prompts and 256
# classifier pairs), from each stage's STAGE.json "seconds" and metrics.jsonl step times.
CAL_PEAK = 213.0          # GFLOP/s
CAL_MODEL = "t5-tiny"
CAL_BATCH, CAL_PROMPT, CAL_RESPONSE = 32, 40, 32
CAL_EVAL = dict(win=512, kl=256, proxy=256, classifier=256)
CAL_PAIRS = dict(num=8000, held_out=1024, tie_slack=0.05, relabelled=8000)
CAL = {
    # seconds per step (means over the run, first step and evaluation steps left out)
    "sft_step": 0.0430,       # sft, 3000 steps
    "pm_step": 0.0828,        # pm (pairwise), 1000 steps
    "update_step": 0.0743,    # offline IPO, 6 runs x 200 steps; online's update matches
    "sample": 0.0148,         # online: 2 samples for each of 32 prompts (sample_time)
    "judge": 0.0468,          # online: the t5-tiny PM on 32 pairs, both orders (judge_time)
    "golden_judge": 0.0028,   # online: the golden judge (a program) on 32 pairs
    "eval_point": 1.45,       # one evaluation point: its step's time less a step's (42 points)
    # seconds outside the steps: load, set-up, final evaluation, export
    "sft_fixed": 6.7,         # includes the final validation loss
    "pm_fixed": 12.2,         # includes 2 held-out evaluations of 1024 pairs, both orders
    "run_fixed": 1.5,         # online and offline: includes the evaluator's reference samples
    "eval_stage": 4.0,        # f1/sft_eval: one point, evaluator set-up, cached compilation
    # the first step's extra time: compiling (first of its shapes) or reading XLA's cache
    "sft_compile": 4.25, "sft_cached": 1.39,       # sft; f1/sft
    "pm_compile": 4.40, "pm_cached": 0.97,         # pm; f1/pm
    "offline_compile": 4.74, "offline_cached": 1.12,
    "online_compile": 7.66, "online_cached": 1.6,  # online_ipo_s0; the other 5 runs' mean
    "eval_compile": 3.2,                           # sft_eval 7.2 s against f1/sft_eval's 4.0
    # pair sets: D_golden (8000 + 1024 held-out pairs, 2 SFT samples each) 11.2 s; the
    # proxy's relabelling of its 8000 pairs 15.7 s; a copy or a count (pairs_quarter,
    # noisy_golden_agreement) 0.4 s
    "pairs_sampled": 11.2, "pairs_relabelled": 15.7, "pairs_copy": 0.4,
    "pairs_fixed": 1.0,       # of the sampled and relabelled sets: loading the policy or PM
}
# Converting a task's records (pipeline.load_records) the first time this machine meets a
# (task, seed, lengths): seconds outside the steps beyond a cached run's, measured the same
# day: SFT's env_sft at a new seed (seed-1 default study: 57.6 s outside its steps against
# 6.7) and an online run's env_prompts at a new seed (24-31 s more: the full study's
# f1/online_ipo_s*, the seed-1 study's online_ipo_s2). Added as "up to" (the records cache
# is the machine's); other tasks (env_tiny_*: 512 records; an import's) are not priced.
CONVERT_S = {"env_sft": 51.0, "env_prompts": 26.0}
# Unmeasured kinds, priced by analogy:
WRITER_PAIRS_S = 5.0      # writer / gap pair sets: read and golden-label the writer's pairs
GIVEN_S = 0.1             # a given SFT export: recorded, not trained

EFFICIENCY = 0.5          # share of the float32 matmul peak large matmuls reach (module doc)
# Measured accuracy (tests/study/test_cost.py holds the numbers): the largest relative error
# against a stage of the default study the constants come from, and against the same
# stages rerun (the seed-1 default study, the full study's redrawn foundation f1/) where no
# records conversion (CONVERT_S) fell in the stage.
ACCURACY = 0.06
ACCURACY_RERUN = 0.15

# The tpu scale's slice (configs/*.py:paper: mesh data=-1, fsdp=8, "a 16-chip slice: 2 x 8").
TPU_CHIP, TPU_CHIPS, TPU_FSDP = "v4", 16, 8
TPU_SLOWDOWN = 2.0        # real steps reach perhaps half of the roofline bound (alignment.aot)
# Bytes a decode step moves per device, in float32 weights: the compiled sampler on a pure
# FSDP mesh gathers the weights every token (BUILD_NOTES.md: Llama 3.2 1B on v5e, 10.4 GB
# per decode step against 4.96 GB of float32 weights).
DECODE_WEIGHT_READS = 2.1


# -- FLOPs -----------------------------------------------------------------------
def _fwd(cfg, prompts: int, lp: int, responses: int, lr: int) -> float:
  """A policy's teacher-forced forward (as much as sampling the same tokens, but for a
  decoder-only model's prompt: `flops.online_step` counts sampling)."""
  return float(flops.forward(cfg, prompts, lp, responses, lr)["total"])


def params(cfg) -> int:
  """Parameters of a zoo model of either family (`t5_params`, `decoder_params`)."""
  return t5_params(cfg) if cfg.architecture == "t5" else decoder_params(cfg)


def decoder_params(cfg) -> int:
  """Parameters of a zoo decoder-only model (embeddings, LM head unless tied, layers with
  grouped-query attention and SwiGLU, their norms and biases, the final norm)."""
  d, hk, gk = cfg.d_model, cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
  embed = cfg.vocab_size * d * (1 if cfg.tie_embeddings else 2)
  attention = 2 * d * hk + 2 * d * gk + (hk + 2 * gk if cfg.qkv_bias else 0) + \
      (d if cfg.out_bias else 0)
  return embed + cfg.num_layers * (attention + 3 * d * cfg.d_ff + 2 * d) + d


def t5_params(cfg) -> int:
  """Parameters of a zoo T5 (embeddings, untied LM head, layers, norms, position biases)."""
  d, hk = cfg.d_model, cfg.num_heads * cfg.head_dim
  mlp = (2 if cfg.feed_forward == "relu" else 3) * d * cfg.d_ff
  embed = cfg.vocab_size * d * (1 if cfg.tie_embeddings else 2)
  enc = cfg.num_encoder_layers * (4 * d * hk + mlp + 2 * d)
  dec = cfg.num_decoder_layers * (8 * d * hk + mlp + 3 * d)
  return embed + enc + dec + 2 * d + 2 * cfg.relative_buckets * cfg.num_heads


def _tokens(b: int, lp: int, lr: int) -> float:
  """A step's tokens relative to the calibration's: what its overhead scales with."""
  return b * (lp + lr) / (CAL_BATCH * (CAL_PROMPT + CAL_RESPONSE))


def _seconds(f: float, peak: float = CAL_PEAK) -> float:
  return f / (peak * 1e9 * EFFICIENCY)


# -- what a stage does -------------------------------------------------------------
@dataclasses.dataclass
class Work:
  """One stage in the units the estimate prices. Overheads are seconds at CAL_PEAK."""
  model: str = ""
  steps: int = 0
  step_flops: float = 0.0
  step_overhead: float = 0.0
  points: int = 0                 # evaluation points (online, offline, eval)
  point_flops: float = 0.0
  point_overhead: float = 0.0
  once_flops: float = 0.0         # once per stage: evaluator set-up, held-out evaluations
  fixed: float = 0.0
  compile: float = 0.0            # first stage of its shapes
  cached: float = 0.0             # a later one
  compile_key: tuple = ()
  decode_steps: float = 0.0       # sequential decode steps (TPU roofline)
  decode_bytes: float = 0.0       # bytes each reads per chip
  memory: float = 0.0             # bytes per chip (tpu scale)

  @property
  def flops(self) -> float:
    return self.steps * self.step_flops + self.points * self.point_flops + self.once_flops

  def seconds(self, peak: float, first: bool) -> float:
    """Wall seconds on this machine at matmul peak `peak` (GFLOP/s)."""
    rest = (self.fixed + (self.compile if first else self.cached) +
            self.steps * self.step_overhead + self.points * self.point_overhead)
    return rest * CAL_PEAK / peak + _seconds(self.flops, peak)

  def chip_hours(self, chip: str = TPU_CHIP, chips: int = TPU_CHIPS) -> float:
    """Chip-hours on a slice of `chips` `chip`s: the roofline bound x TPU_SLOWDOWN."""
    peak, bandwidth = aot.CHIP_PEAK[chip]
    bound = self.flops / (chips * peak) + self.decode_steps * self.decode_bytes / bandwidth
    return TPU_SLOWDOWN * bound * chips / 3600


class Unpriced(ValueError):
  """A stage whose model has no FLOP count here (not in the zoo)."""


def model_config(section):
  """The zoo config of a config's `model` section (its vocabulary where it sets one, else
  the zoo's: a task's own vocabulary is not read while planning)."""
  try:
    cfg = zoo.get(section.name, **({"vocab_size": section.vocab_size}
                                   if section.get("vocab_size", 0) else {}))
  except ValueError as e:
    raise Unpriced(str(e)) from None
  return cfg


class _Shapes:
  """A config's batch and lengths, its model's config and its neighbours in the plan."""

  def __init__(self, stage: Stage, ctx: "Context"):
    c = stage.config
    self.c, self.ctx = c, ctx
    self.b, self.lp, self.lr = c.data.batch_size, c.data.prompt_len, c.data.response_len
    self.m = model_config(c.model)
    self.steps = int(c.train.num_steps)
    self.tok = _tokens(self.b, self.lp, self.lr)

  def model_at(self, export: str):
    """The model of the stage whose export `export` is (the policy's if none is planned)."""
    st = self.ctx.stage_of(export)
    return model_config(st.config.model) if st is not None and st.config is not None else self.m

  def head_at(self, export: str) -> str:
    st = self.ctx.stage_of(export)
    return st.config.get("head", "pairwise") if st is not None and st.config is not None \
        else "pairwise"


@dataclasses.dataclass
class Context:
  """What pricing a stage may read: the study, its workdir and the plan's stages by name
  (a stage priced by the model it starts from, e.g. an online run's judge)."""
  study: object
  workdir: str
  by_name: dict

  def stage_of(self, export: str) -> Optional[Stage]:
    if not export:
      return None
    rel = os.path.relpath(os.path.dirname(export), self.workdir).replace(os.sep, "/")
    return self.by_name.get(rel)


def _eval_count(e, steps: int) -> int:
  """How many steps of 1..steps `evaluation.is_eval_step` picks."""
  if e.get("steps", None):
    return len({int(s) for s in e.steps if 1 <= int(s) <= steps})
  every = int(e.get("every", 0) or 0)
  return steps // every + (steps % every != 0) if every else 0


def _eval_point(s: _Shapes) -> tuple[float, float, float, int]:
  """One evaluation of the policy: (FLOPs, overhead s, set-up FLOPs, decode calls)."""
  e, m, lp, lr = s.c.eval, s.m, s.lp, s.lr
  proxy = s.model_at(e.get("proxy", "")) if e.get("proxy", "") else None
  n_proxy = int(e.get("proxy_prompts", 0) or e.win_prompts) if proxy is not None else 0
  row = _fwd(m, 1, lp, 1, lr)
  sampled = e.win_prompts + e.kl_prompts + n_proxy   # the proxy's metrics: a 2nd sample
  f = row * (sampled + 2 * e.kl_prompts + 2 * e.classifier_pairs)  # KL: pi and pi_sft
  if proxy is not None:  # (pi, reference) and (pi, pi): asked both ways
    f += flops.scorer_forward(proxy, 4 * n_proxy, lp, lr)
  if e.get("golden_checkpoint", ""):  # a golden PM scores each pair (real data)
    golden = s.model_at(e.golden_checkpoint)
    f += flops.scorer_forward(golden, 2 * (e.win_prompts + n_proxy), lp, lr)
  rows = e.win_prompts + e.kl_prompts + n_proxy + e.classifier_pairs
  cal = sum(CAL_EVAL.values())
  overhead = POINT_OVERHEAD * rows / cal * (lp + lr) / (CAL_PROMPT + CAL_RESPONSE)
  ref = s.model_at(e.get("reference", ""))
  setup = _fwd(ref, 1, lp, 1, lr) * e.win_prompts + row * 2 * e.classifier_pairs
  bs = max(1, int(e.batch_size))
  calls = sum(math.ceil(n / bs) for n in (e.win_prompts, e.kl_prompts, n_proxy) if n)
  return f, overhead, setup, calls


def _kv_bytes(m, rows: float, lp: int, lr: int, dtype_bytes: int) -> float:
  """The sampler's KV cache: T5's self-attention over the response and cross over the
  prompt; a decoder-only model's num_kv_heads over both."""
  layers = m.num_decoder_layers if m.architecture == "t5" else m.num_layers
  return rows * layers * (lp + lr) * 2 * m.num_kv_heads * m.head_dim * dtype_bytes


def _dtype_bytes(name: str) -> int:
  return 2 if "16" in str(name) else 4


def _activations(m, rows_enc: float, lp: int, rows_dec: float, lr: int, act: int) -> float:
  """Bytes the backward pass keeps of one forward (no rematerialisation): per token
  and layer about ten d-vectors, two d_ff ones and the float32 attention scores and
  probabilities; the logits in float32, three times (logits, softmax, gradient). A
  decoder-only model: its `rows_dec` rows of lp + lr tokens, one stack."""
  hk = m.num_heads
  per = lambda keys: act * (10 * m.d_model + 2 * m.d_ff) + 4 * 2 * hk * keys
  if m.architecture != "t5":
    return (rows_dec * (lp + lr) * m.num_layers * per(lp + lr) +
            3 * 4 * rows_dec * lr * m.vocab_size)
  enc = rows_enc * lp * m.num_encoder_layers * per(lp)
  dec = rows_dec * lr * m.num_decoder_layers * per(lr + lp)  # self and cross attention
  return enc + dec + 3 * 4 * rows_dec * lr * m.vocab_size


def _memory(kind: str, s: _Shapes, judge=None, samples: int = 2) -> float:
  """Bytes per chip on the tpu slice (module docstring: what this formula leaves out)."""
  c, m = s.c, s.m
  fsdp = max(1, int(c.mesh.get("fsdp", 1) or 1)) * max(1, int(c.mesh.get("tensor", 1) or 1))
  pb, act = _dtype_bytes(c.model.get("param_dtype", "float32")), _dtype_bytes(c.model.dtype)
  n = params(m)
  per_chip = lambda rows: math.ceil(rows / TPU_CHIPS)  # the batch over data x fsdp
  resident = n * pb / fsdp
  if kind in ("sft", "pm", "online", "offline"):
    resident += n * (pb + 8) / fsdp            # the gradient; AdamW's two float32 moments
  if kind in ("online", "offline"):
    resident += n * pb / fsdp                  # the frozen reference
  if judge is not None:
    resident += params(judge) * pb / fsdp
  if kind == "sft":
    temps = _activations(m, per_chip(s.b), s.lp, per_chip(s.b), s.lr, act)
  elif kind == "pm":
    temps = _activations(m, per_chip(s.b), s.lp + 2 * s.lr, per_chip(s.b), 1, act)
  elif kind in ("online", "offline"):
    temps = _activations(m, per_chip(s.b), s.lp, per_chip(samples * s.b), s.lr, act)
  else:  # eval: the policy, pi_sft, the reference and the proxy resident; sampling only
    resident += 2 * n * pb / fsdp + (params(judge) * pb / fsdp if judge is not None else 0)
    temps = 0.0
  if kind in ("online", "eval"):
    rows = per_chip(samples * s.b if kind == "online" else c.eval.batch_size)
    cache = _dtype_bytes(c.get("sampling", {}).get("cache_dtype", "float32")
                         if "sampling" in c else "float32")
    temps = max(temps, _kv_bytes(m, rows, s.lp, s.lr, cache) + 4 * rows * m.vocab_size)
  return resident + temps


def _decode_bytes(m, rows: float, lp: int, lr: int) -> float:
  """What one decode step moves per chip: the gathered weights (DECODE_WEIGHT_READS
  times the float32 weights' bytes: BUILD_NOTES' compiled figure) and the bfloat16 KV
  cache of its `rows` rows."""
  return DECODE_WEIGHT_READS * params(m) * 4 + _kv_bytes(m, rows, lp, lr, 2)


def work_sft(stage: Stage, ctx: Context) -> Work:
  s = _Shapes(stage, ctx)
  return Work(model=s.c.model.name, steps=s.steps,
              step_flops=3 * _fwd(s.m, s.b, s.lp, s.b, s.lr),
              step_overhead=OVERHEAD["sft"] * s.tok, fixed=CAL["sft_fixed"],
              compile=CAL["sft_compile"], cached=CAL["sft_cached"],
              compile_key=("sft", s.c.model.name, s.b, s.lp, s.lr),
              memory=_memory("sft", s))


def _held_out(s: _Shapes, pairwise: bool) -> tuple[float, float]:
  """A PM stage's held-out evaluations (at its eval steps and at the end): (FLOPs, s)."""
  n = (_eval_count(s.c.eval, s.steps) + 1) * int(s.c.eval.num_batches)
  f = n * (flops.scorer_forward(s.m, 2 * s.b, s.lp, s.lr) if pairwise
           else flops.scorer_forward(s.m, 2 * s.b, s.lp, s.lr, pairwise=False))
  return f, n * OVERHEAD["judge"] * s.tok


def work_pm(stage: Stage, ctx: Context) -> Work:
  s = _Shapes(stage, ctx)
  pairwise = s.c.get("head", "pairwise") == "pairwise"
  step = (flops.scorer_forward(s.m, s.b, s.lp, s.lr) if pairwise  # one order per pair
          else flops.scorer_forward(s.m, 2 * s.b, s.lp, s.lr, pairwise=False))
  held_f, held_s = _held_out(s, pairwise)
  return Work(model=s.c.model.name, steps=s.steps, step_flops=3 * step,
              step_overhead=OVERHEAD["pm"] * s.tok, once_flops=held_f,
              fixed=PM_FIXED + held_s, compile=CAL["pm_compile"], cached=CAL["pm_cached"],
              compile_key=("pm", s.c.model.name, s.b, s.lp, s.lr, pairwise),
              memory=_memory("pm", s))


def _with_eval(w: Work, s: _Shapes, points: int) -> Work:
  f, overhead, setup, calls = _eval_point(s)
  w.points, w.point_flops, w.point_overhead = points, f, overhead
  w.once_flops += setup
  setup_calls = math.ceil(s.c.eval.win_prompts / max(1, int(s.c.eval.batch_size)))
  w.decode_steps += (points * calls + setup_calls) * s.lr  # + the reference's samples
  return w


def work_offline(stage: Stage, ctx: Context) -> Work:
  s = _Shapes(stage, ctx)
  w = Work(model=s.c.model.name, steps=s.steps,
           step_flops=float(flops.alignment_step(s.m, s.b, s.lp, s.lr)["total"]),
           step_overhead=OVERHEAD["update"] * s.tok, fixed=RUN_FIXED,
           compile=CAL["offline_compile"], cached=CAL["offline_cached"],
           compile_key=("offline", s.c.model.name, s.b, s.lp, s.lr),
           memory=_memory("offline", s))
  w = _with_eval(w, s, _eval_count(s.c.eval, s.steps))
  w.decode_bytes = _decode_bytes(s.m, rows=s.c.eval.batch_size / TPU_CHIPS, lp=s.lp, lr=s.lr)
  return w


def online_step(s: _Shapes) -> tuple[float, float]:
  """One online step: (FLOPs, overhead s at CAL_PEAK): sampling k responses per prompt,
  the judge (k (k - 1) pairwise passes, k reward passes, or the golden program) and the
  update (contrastive: the preference step; rloo/grpo: k responses per prompt, forward
  and backward over `rl.updates` minibatches, the reference's forward)."""
  c, m, b, lp, lr = s.c, s.m, s.b, s.lp, s.lr
  rl = c.get("rl", {})
  method, k = rl.get("method", "contrastive"), int(rl.get("samples", 2))
  siblings = int(rl.get("siblings", 0))
  kind, ckpt = c.judge.kind, c.judge.get("checkpoint", "")
  golden_pm = c.judge.get("golden_checkpoint", "") if kind == "golden" else ""
  if kind == "golden" and not golden_pm:
    judge_cfg, pairwise, judge_s = None, True, CAL["golden_judge"] * k / 2
  else:
    export = golden_pm or ckpt
    judge_cfg, pairwise = s.model_at(export), s.head_at(export) == "pairwise"
    judge_s = OVERHEAD["judge"] * flops.judge_passes(k, siblings, pairwise) / 2 * s.tok
  f = flops.online_step(m, b, lp, lr, method, k, siblings, judge_cfg, pairwise)
  overhead = (OVERHEAD["sample"] * k / 2 + OVERHEAD["update"] * k / 2) * s.tok + judge_s
  return f["total"], overhead


def work_online(stage: Stage, ctx: Context) -> Work:
  s = _Shapes(stage, ctx)
  f, overhead = online_step(s)
  rl = s.c.get("rl", {})
  k = int(rl.get("samples", 2))
  judge = None
  if s.c.judge.kind != "golden":
    judge = s.model_at(s.c.judge.get("checkpoint", ""))
  w = Work(model=s.c.model.name, steps=s.steps, step_flops=f, step_overhead=overhead,
           fixed=RUN_FIXED, compile=CAL["online_compile"], cached=CAL["online_cached"],
           compile_key=("online", s.c.model.name, s.b, s.lp, s.lr, rl.get("method", ""), k),
           decode_steps=s.steps * s.lr, memory=_memory("online", s, judge, k))
  w = _with_eval(w, s, _eval_count(s.c.eval, s.steps))
  w.decode_bytes = _decode_bytes(s.m, rows=k * s.b / TPU_CHIPS, lp=s.lp, lr=s.lr)
  return w


def work_eval(stage: Stage, ctx: Context) -> Work:
  s = _Shapes(stage, ctx)
  e = s.c.eval
  proxy = s.model_at(e.get("proxy", "")) if e.get("proxy", "") else None
  w = Work(model=s.c.model.name, fixed=EVAL_FIXED, compile=CAL["eval_compile"], cached=0.0,
           compile_key=("eval", s.c.model.name, s.lp, s.lr, e.batch_size),
           memory=_memory("eval", s, proxy))
  w = _with_eval(w, s, 1)  # the study evaluates an export: one point
  w.decode_bytes = _decode_bytes(s.m, rows=e.batch_size / TPU_CHIPS, lp=s.lp, lr=s.lr)
  return w


def _pair_rows(p: dict, study) -> tuple[float, float, str]:
  """(sampled responses, pairs relabelled by a PM, what prices the rest) of a pair set."""
  kind = p.get("kind", "")
  slack = 1 + float(study.tie_slack)
  if kind in ("sft", "policy"):  # two samples per prompt
    return 2 * (p.get("num", 0) + p.get("held_out", 0)) * slack, 0.0, "sampled"
  if kind == "mixed":            # one sample beside a writer response
    return p.get("num", 0) * slack, 0.0, "sampled"
  if kind == "relabelled":
    return 0.0, float(study.num_pairs), "relabelled"
  if kind in ("writer", "gap"):
    return 0.0, 0.0, "writer"
  return 0.0, 0.0, "copy"        # first_quarter, noisy_golden_agreement: read and count


def work_pairs(stage: Stage, ctx: Context) -> Work:
  """Pair sets are not FLOP-bound at these sizes: a fixed cost, plus each sampled response
  or relabelled pair at its calibrated rate and FLOPs (the study's model samples and
  judges)."""
  s = ctx.study
  p = dict(stage.params or {})
  m = model_config(config_lib.ConfigDict(dict(name=s.model, vocab_size=0)))
  lp, lr = s.prompt_len, s.response_len
  sampled, relabelled, how = _pair_rows(p, s)
  tok = (lp + lr) / (CAL_PROMPT + CAL_RESPONSE)
  w = Work(model=s.model, compile_key=("pairs", how))
  if how == "copy":
    w.fixed = CAL["pairs_copy"]
    return w
  if how == "writer":
    w.fixed = WRITER_PAIRS_S
    return w
  w.fixed = CAL["pairs_fixed"]
  golden_f = 0.0
  if p.get("golden", ""):  # a golden PM labels each pair, both ways (real data)
    golden_f = flops.scorer_forward(m, 2, lp, lr) * (sampled / 2)
  w.once_flops = sampled * _fwd(m, 1, lp, 1, lr) + golden_f
  w.once_flops += relabelled * flops.scorer_forward(m, 2, lp, lr)
  w.fixed += (sampled * SAMPLE_ROW_S + relabelled * RELABEL_PAIR_S) * tok
  batch = max(1, int(s.sample_batch))
  w.decode_steps = math.ceil(sampled / batch) * lr
  w.decode_bytes = _decode_bytes(m, rows=batch / TPU_CHIPS, lp=lp, lr=lr)
  # on the slice: the sampling policy (or the relabelling PM) over fsdp and its KV cache
  rows = math.ceil(batch / TPU_CHIPS)
  w.memory = params(m) * 4 / TPU_FSDP + _kv_bytes(m, rows, lp, lr, 2) + \
      4 * rows * m.vocab_size
  return w


def work_given(stage: Stage, ctx: Context) -> Work:
  del stage
  return Work(model=ctx.study.model, fixed=GIVEN_S, compile_key=("given",))


WORK = {"sft": work_sft, "pm": work_pm, "online": work_online, "offline": work_offline,
        "eval": work_eval, "pairs": work_pairs, "given": work_given}


# -- the overheads, from the calibration -------------------------------------------
def _calibrate():
  """The non-FLOP part of each measured time: the measurement less its FLOPs' time at
  EFFICIENCY, at the calibration's model and shapes."""
  m = zoo.get(CAL_MODEL)
  b, lp, lr = CAL_BATCH, CAL_PROMPT, CAL_RESPONSE
  t = _seconds
  over = {
      "sft": CAL["sft_step"] - t(3 * _fwd(m, b, lp, b, lr)),
      "pm": CAL["pm_step"] - t(3 * flops.scorer_forward(m, b, lp, lr)),
      "update": CAL["update_step"] - t(flops.alignment_step(m, b, lp, lr)["total"]),
      "sample": CAL["sample"] - t(_fwd(m, b, lp, 2 * b, lr)),
      "judge": CAL["judge"] - t(flops.scorer_forward(m, 2 * b, lp, lr)),
  }
  row = _fwd(m, 1, lp, 1, lr)
  e = CAL_EVAL
  point_f = (row * (e["win"] + 3 * e["kl"] + e["proxy"] + 2 * e["classifier"]) +
             flops.scorer_forward(m, 4 * e["proxy"], lp, lr))
  point = CAL["eval_point"] - t(point_f)
  setup = t(row * (e["win"] + 2 * e["classifier"]))
  run_fixed = CAL["run_fixed"] - setup
  eval_fixed = CAL["eval_stage"] - CAL["eval_point"] - setup
  held = 2 * (1024 // b)  # the default PM's two held-out evaluations of 1024 pairs
  pm_fixed = CAL["pm_fixed"] - held * (over["judge"] + t(flops.scorer_forward(m, 2 * b, lp, lr)))
  cp = CAL_PAIRS
  rows = 2 * (cp["num"] + cp["held_out"]) * (1 + cp["tie_slack"])
  sample_row = (CAL["pairs_sampled"] - CAL["pairs_fixed"] - t(rows * row)) / rows
  relabel = (CAL["pairs_relabelled"] - CAL["pairs_fixed"] -
             t(cp["relabelled"] * flops.scorer_forward(m, 2, lp, lr))) / cp["relabelled"]
  return over, point, run_fixed, eval_fixed, pm_fixed, sample_row, relabel


(OVERHEAD, POINT_OVERHEAD, RUN_FIXED, EVAL_FIXED, PM_FIXED, SAMPLE_ROW_S,
 RELABEL_PAIR_S) = _calibrate()
