"""Model FLOPs of T5 forwards and alignment train steps, counted from the config.

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

A foundation: the config is read for its numbers only (`T5Shape`, which
`models.t5.T5Config` satisfies), so counting FLOPs needs nothing of the models.
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


def alignment_step(cfg: T5Shape, pairs: int, prompt_len: int, response_len: int,
                   shared_prompt: bool = True) -> dict[str, int]:
  """FLOPs of one preference step: policy forward + backward on chosen and rejected,
  and the frozen reference's forward on both.

  shared_prompt: each prompt encoded once for its two responses (as
  `steps.pair_logps` does); False counts the encoder on every response row.
  """
  rows = None if shared_prompt else 2 * pairs
  fwd = t5_forward(cfg, pairs, prompt_len, 2 * pairs, response_len, encoder_rows=rows)
  return {"forward": fwd["total"], "policy": 3 * fwd["total"], "reference": fwd["total"],
          "total": 4 * fwd["total"], "forward_parts": fwd}
