"""Sequence log-probs and the exact per-token KL, from the training forward.

Everything here reads logits of `heads.LanguageModel.__call__`, the function
that training differentiates, so a loss, the sampler's bookkeeping and the
evaluation's KL all agree on what log pi(y|x) is. Shapes: B batch, L response
length, V vocabulary; masks are 1 for real response tokens (EOS included) and
0 for padding, and padded positions contribute exactly 0.

The KL is the paper's: for a response y sampled from the policy, at every
response token t the KL between the full next-token distributions,
KL(pi(.|x, y<t) || ref(.|x, y<t)), summed over t. Its expectation over
y ~ pi equals the sequence-level KL(pi(.|x) || ref(.|x)) (chain rule), with
far less variance than the sampled log-ratio sum_t log pi(y_t) / ref(y_t).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from alignment.data.batches import SFTBatch

Array = jax.Array


def token_logprobs(logits_blv: Array, tokens_bl: Array, mask_bl: Array) -> Array:
  """log softmax(logits)[token] per position [B, L]; 0 where mask is 0.

  Computed as logit[token] - logsumexp(logits), the logit picked by a one-hot
  select: no [B, L, V] log-softmax is materialised, and the gradient is
  elementwise (softmax minus one-hot) instead of a scatter into a [B, L, V]
  array of zeros; with V split over `tensor` the pick is a sum like the
  logsumexp's.
  """
  logits_blv = logits_blv.astype(jnp.float32)
  lse_bl = jax.nn.logsumexp(logits_blv, axis=-1)
  hit_blv = jnp.arange(logits_blv.shape[-1]) == tokens_bl[..., None]
  picked_bl = jnp.sum(jnp.where(hit_blv, logits_blv, 0.0), axis=-1)
  return jnp.where(mask_bl.astype(bool), picked_bl - lse_bl, 0.0)


def sequence_logprob(logits_blv: Array, tokens_bl: Array, mask_bl: Array) -> Array:
  """log pi(y | x) = sum of token log-probs over real tokens [B]."""
  return jnp.sum(token_logprobs(logits_blv, tokens_bl, mask_bl), axis=-1)


def mean_token_logprob(logits_blv: Array, tokens_bl: Array, mask_bl: Array) -> Array:
  """Sequence log-prob divided by the number of real tokens [B] (0 for empty rows)."""
  count = jnp.sum(mask_bl.astype(jnp.float32), axis=-1)
  return sequence_logprob(logits_blv, tokens_bl, mask_bl) / jnp.maximum(count, 1.0)


def per_token_kl(policy_logits_blv: Array, ref_logits_blv: Array, mask_bl: Array) -> Array:
  """KL(pi(.|prefix) || ref(.|prefix)) over the full vocabulary, per position [B, L]."""
  logp = jax.nn.log_softmax(policy_logits_blv.astype(jnp.float32), axis=-1)
  logq = jax.nn.log_softmax(ref_logits_blv.astype(jnp.float32), axis=-1)
  kl_bl = jnp.sum(jnp.exp(logp) * (logp - logq), axis=-1)
  return jnp.where(mask_bl.astype(bool), kl_bl, 0.0)


def exact_kl(policy_logits_blv: Array, ref_logits_blv: Array, mask_bl: Array) -> Array:
  """The paper's KL of each response: per-token full-distribution KLs summed [B]."""
  return jnp.sum(per_token_kl(policy_logits_blv, ref_logits_blv, mask_bl), axis=-1)


# --------------------------------------------------------------------------
# Convenience: (model, params, batch)
# --------------------------------------------------------------------------


def response_logits(model, params, batch: SFTBatch) -> Array:
  """Logits [B, L, V] of the training forward over the batch's responses."""
  return model.apply({"params": params}, batch.prompt, batch.prompt_mask, batch.response,
                     batch.response_mask)


def score(model, params, batch: SFTBatch) -> dict[str, Array]:
  """Token log-probs [B, L], their sum [B] and per-token mean [B] for each response."""
  logits = response_logits(model, params, batch)
  tok = token_logprobs(logits, batch.response, batch.response_mask)
  count = jnp.sum(batch.response_mask.astype(jnp.float32), axis=-1)
  return {"token_logprobs": tok, "sum": jnp.sum(tok, axis=-1),
          "mean": jnp.sum(tok, axis=-1) / jnp.maximum(count, 1.0)}


def kl_to_reference(model, policy_params: Any, ref_params: Any, batch: SFTBatch,
                    ref_model=None) -> Array:
  """Exact KL [B] of each response between the policy and the reference.

  `ref_model` defaults to `model` (the reference is the frozen SFT policy).
  The responses should be samples from the policy, so that the batch mean
  estimates KL(pi || ref) as the paper does.
  """
  policy = response_logits(model, policy_params, batch)
  ref = response_logits(ref_model or model, ref_params, batch)
  return exact_kl(policy, ref, batch.response_mask)
