"""Model FLOPs of T5 and decoder-only forwards and alignment train steps, counted
from the config.

Only matrix multiplications are counted (2 FLOPs per multiply-add), as model
FLOPs utilisation conventionally does: the projections, the MLPs, the
attention scores and their weighted sums (over the full L x S score matrix,
masked or not, which is what a dense implementation computes) and the output
projection. Embedding gathers, norms, softmaxes and the optimiser are not
matmuls and are left out; XLA's `cost_analysis()` counts them too, so it
reads a little higher than these figures (the train benchmark prints both).

A backward pass costs twice its forward: every matmul has two input
gradients (activations and weights, or both operands of an attention
matmul), each as large as the forward product.

A decoder-only model reads [prompt | response] as one causal sequence: in
training each response row carries its own copy of the prompt (a causal pass
cannot share it), while the sampler prefills each prompt once and decodes its
samples from copies of that cache (`forward(..., sampling=True)`). A T5
encodes each prompt once either way.

A foundation: the config is read for its numbers only (`T5Shape`, which
`models.t5.T5Config` satisfies, and `DecoderShape`, `models.decoder.DecoderConfig`'s),
so counting FLOPs needs nothing of the models.
"""
from __future__ import annotations

from typing import Protocol


class T5Shape(Protocol):
  """The fields of a T5 config that its FLOPs depend on (`models.t5.T5Config` has them)."""
  d_model: int
  num_heads: int
  head_dim: int
  d_ff: int
  vocab_size: int
  num_encoder_layers: int
  num_decoder_layers: int
  feed_forward: str


class DecoderShape(Protocol):
  """The fields of a decoder-only config its FLOPs depend on (`DecoderConfig` has them)."""
  d_model: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  d_ff: int
  vocab_size: int
  num_layers: int


def t5_forward(cfg: T5Shape, prompts: int, prompt_len: int, responses: int,
               response_len: int, encoder_rows: int | None = None,
               cross_kv_rows: int | None = None) -> dict[str, int]:
  """FLOPs of one teacher-forced forward: `responses` rows decoded over `prompts` prompts.

  encoder_rows: rows the encoder runs on (default `prompts`: each prompt once;
    pass `responses` for an implementation that repeats the prompt per response).
  cross_kv_rows: rows whose cross-attention keys/values are projected (default
    `encoder_rows`).
  Returns the parts and their "total".
  """
  d, hk, v = cfg.d_model, cfg.num_heads * cfg.head_dim, cfg.vocab_size
  mlp = (2 if cfg.feed_forward == "relu" else 3) * d * cfg.d_ff  # gated: 3 matrices
  enc_rows = prompts if encoder_rows is None else encoder_rows
  kv_rows = enc_rows if cross_kv_rows is None else cross_kv_rows
  lp, lr = prompt_len, response_len
  mac = {
      # q, k, v, o projections; scores and weighted sum over Lp keys; the MLP.
      "encoder": enc_rows * lp * cfg.num_encoder_layers * (4 * d * hk + 2 * lp * hk + mlp),
      # self-attention (4 projections, Lr keys), cross-attention q and o and its Lp keys, MLP.
      "decoder": responses * lr * cfg.num_decoder_layers * (4 * d * hk + 2 * lr * hk +
                                                            2 * d * hk + 2 * lp * hk + mlp),
      "cross_kv": kv_rows * lp * cfg.num_decoder_layers * 2 * d * hk,
      "lm_head": responses * lr * d * v,
  }
  out = {k: 2 * n for k, n in mac.items()}
  out["total"] = sum(out.values())
  return out


def decoder_forward(cfg: DecoderShape, prompts: int, prompt_len: int, responses: int,
                    response_len: int, shared_prompt: bool = False) -> dict[str, int]:
  """FLOPs of one forward of a decoder-only model: `responses` rows of
  [prompt | response] over `prompts` prompts, the LM head on the response positions.

  Every position attends over the whole Lp + Lr (the dense score matrix of a
  training pass, or the sampler's cache of Lp + Lr slots); the projections of k
  and v are G = num_kv_heads heads wide (grouped-query attention); the MLP is
  SwiGLU (3 matrices).
  shared_prompt: the prompt runs once per prompt (the sampler's prefill) rather
    than once per response row (a training forward, `DecoderBackbone.shared_prompt`).
  Returns the parts and their "total".
  """
  d, hk, v = cfg.d_model, cfg.num_heads * cfg.head_dim, cfg.vocab_size
  gk = cfg.num_kv_heads * cfg.head_dim
  lp, lr = prompt_len, response_len
  per_token = cfg.num_layers * (2 * d * hk + 2 * d * gk + 2 * (lp + lr) * hk + 3 * d * cfg.d_ff)
  mac = {
      "prompt": (prompts if shared_prompt else responses) * lp * per_token,
      "response": responses * lr * per_token,
      "lm_head": responses * lr * d * v,
  }
  out = {k: 2 * n for k, n in mac.items()}
  out["total"] = sum(out.values())
  return out


def forward(cfg, prompts: int, prompt_len: int, responses: int, response_len: int,
            sampling: bool = False) -> dict[str, int]:
  """`t5_forward` or `decoder_forward`, by the config's architecture: a training
  forward, or with `sampling` the sampler's work for the same tokens (a decoder
  prefills each prompt once; a T5's is the same either way)."""
  if getattr(cfg, "architecture", "t5") == "t5":
    return t5_forward(cfg, prompts, prompt_len, responses, response_len)
  return decoder_forward(cfg, prompts, prompt_len, responses, response_len,
                         shared_prompt=sampling)


def alignment_step(cfg: T5Shape, pairs: int, prompt_len: int, response_len: int,
                   shared_prompt: bool = True) -> dict[str, int]:
  """FLOPs of one preference step: policy forward + backward on chosen and rejected,
  and the frozen reference's forward on both.

  shared_prompt: each prompt encoded once for its two responses (as
  `steps.pair_logps` does); False counts the encoder on every response row. A
  decoder-only model runs its prompt on every row either way.
  """
  if getattr(cfg, "architecture", "t5") != "t5":
    fwd = decoder_forward(cfg, pairs, prompt_len, 2 * pairs, response_len)
  else:
    rows = None if shared_prompt else 2 * pairs
    fwd = t5_forward(cfg, pairs, prompt_len, 2 * pairs, response_len, encoder_rows=rows)
  return {"forward": fwd["total"], "policy": 3 * fwd["total"], "reference": fwd["total"],
          "total": 4 * fwd["total"], "forward_parts": fwd}


def scorer_forward(cfg, rows: int, lp: int, lr: int, pairwise: bool = True) -> float:
  """A preference model's forward on `rows` pairs (pairwise, T5: prompt and both
  responses encoded, one decoder position read; decoder-only: [x | y1 | y2] and the
  read-out column as one sequence) or a reward model's on `rows` responses; a scalar
  head reads it, so without the LM head."""
  if getattr(cfg, "architecture", "t5") == "t5":
    f = (t5_forward(cfg, rows, lp + 2 * lr, rows, 1) if pairwise
         else t5_forward(cfg, rows, lp, rows, lr + 1))
  else:
    f = decoder_forward(cfg, rows, lp, rows, (2 * lr if pairwise else lr) + 1)
  return float(f["total"] - f["lm_head"])


def judged_pairs(samples: int, siblings: int = 0) -> int:
  """Pairs of a prompt's k samples a pairwise judge is asked about: all k (k - 1) / 2,
  or k m / 2 with `rl.siblings=m` (`algorithms.sibling_pairs`)."""
  k, m = samples, siblings
  return k * (k - 1) // 2 if m in (0, k - 1) else k * m // 2


def judge_passes(samples: int, siblings: int = 0, pairwise: bool = True) -> int:
  """Scorer rows per prompt in one online step: a pairwise PM reads each judged pair
  in both orders (one call), a reward model each sample once."""
  return 2 * judged_pairs(samples, siblings) if pairwise else samples


def online_step(cfg, batch: int, prompt_len: int, response_len: int,
                method: str = "contrastive", samples: int = 2, siblings: int = 0,
                judge_cfg=None, pairwise: bool = True) -> dict[str, float]:
  """Model FLOPs of one online step, by phase: sampling k = `samples` responses of
  `response_len` tokens per prompt (counted at the full length), the judge (a pairwise
  PM asked each judged pair in both orders, or a reward model once per sample; None:
  a program, no model FLOPs) and the update (contrastive: the preference step on one
  pair per prompt; rloo/grpo: the policy's forward and backward and the reference's
  forward on k responses per prompt, grpo with the behaviour log-probs' forward too)."""
  b, lp, lr, k = batch, prompt_len, response_len, samples
  sample = float(forward(cfg, b, lp, k * b, lr, sampling=True)["total"])
  if method == "contrastive":
    update = float(alignment_step(cfg, b, lp, lr)["total"])
  else:
    update = float(forward(cfg, b, lp, k * b, lr)["total"]) * (4 + (method == "grpo"))
  judge = 0.0
  if judge_cfg is not None:
    judge = scorer_forward(judge_cfg, judge_passes(k, siblings, pairwise) * b, lp, lr,
                           pairwise=pairwise)
  return {"sample": sample, "judge": judge, "update": update,
          "total": sample + judge + update}
