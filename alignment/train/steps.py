"""Pure loss functions of the loops: SFT, preference model, preference alignment.

Each `*_loss_fn` returns `loss_fn(params, batch, rng) -> (scalar, metrics)`
for `state.make_step`. They score sequences with the model's own forward
function (`LanguageModel.__call__`), the same one the sampler's log-probs are
checked against, so trainer and sampler never disagree about log pi(y|x).

The alignment step's input is an `AlignmentInput`: the pairs and either the
frozen reference's parameters (`ref_params`: the reference log-probs are
computed in the same jitted step under `stop_gradient`: one program, no host
round trip, and XLA overlaps the two forwards) or the pairs' reference
log-probs already scored on the reference's own mesh (`ref_logps`).
"""
from __future__ import annotations

from typing import Any, Optional

import flax.struct
import jax
import jax.numpy as jnp
import optax

from alignment import losses, scoring
from alignment.data import batches as B

Array = jax.Array


# ---------------------------------------------------------------------------
# SFT
# ---------------------------------------------------------------------------


def sft_loss_fn(model):
  """Mean next-token cross-entropy over the response tokens of an SFTBatch."""
  def loss_fn(params, batch: B.SFTBatch, rng):
    del rng
    logits = model.apply({"params": params}, batch.prompt, batch.prompt_mask,
                         batch.response, batch.response_mask)
    tok = scoring.token_logprobs(logits, batch.response, batch.response_mask)
    mask = batch.response_mask.astype(jnp.float32)
    n = jnp.maximum(jnp.sum(mask), 1.0)
    loss = -jnp.sum(tok) / n
    correct = (jnp.argmax(logits, -1) == batch.response).astype(jnp.float32) * mask
    return loss, {"token_accuracy": jnp.sum(correct) / n,
                  "response_length": jnp.mean(jnp.sum(mask, -1))}
  return loss_fn


# ---------------------------------------------------------------------------
# Preference model
# ---------------------------------------------------------------------------


def preference_model_loss_fn(model):
  """Maximum likelihood of P(y1 beats y2) with the pair's order randomised.

  The batch holds (chosen, rejected) by golden label; each example is shown
  as (chosen, rejected) with label 1 or (rejected, chosen) with label 0, by a
  coin flip from the step's PRNG key, so the model cannot learn a position.
  """
  def loss_fn(params, batch: B.PreferenceBatch, rng):
    flip = jax.random.bernoulli(rng, 0.5, (batch.prompt.shape[0],))
    pick = lambda a, b: jnp.where(flip[:, None], b, a)
    y1, m1 = pick(batch.chosen, batch.rejected), pick(batch.chosen_mask, batch.rejected_mask)
    y2, m2 = pick(batch.rejected, batch.chosen), pick(batch.rejected_mask, batch.chosen_mask)
    labels = 1.0 - flip.astype(jnp.float32)
    logits = model.apply({"params": params}, batch.prompt, batch.prompt_mask, y1, m1, y2, m2)
    loss = jnp.mean(optax.sigmoid_binary_cross_entropy(logits, labels))
    acc = jnp.mean(((logits > 0).astype(jnp.float32) == labels).astype(jnp.float32))
    return loss, {"accuracy": acc, "logit_abs": jnp.mean(jnp.abs(logits))}
  return loss_fn


# ---------------------------------------------------------------------------
# Preference alignment (offline and online share this)
# ---------------------------------------------------------------------------


def pair_logps(model, params, batch: B.PreferenceBatch, reduction: str):
  """Sequence log-probs [B] of chosen and rejected, from one forward of 2B responses.

  The two responses share their prompt: T5 encodes it once, not twice
  (`LanguageModel.shared_prompt_logits`), a quarter of the step's FLOPs at
  T5.1.1-small shapes; the log-probs equal separate forwards up to rounding.
  """
  resp = jnp.concatenate([batch.chosen, batch.rejected], 0)
  resp_mask = jnp.concatenate([batch.chosen_mask, batch.rejected_mask], 0)
  logits = model.apply({"params": params}, batch.prompt, batch.prompt_mask, resp, resp_mask,
                       method="shared_prompt_logits")
  tok = scoring.token_logprobs(logits, resp, resp_mask)
  seq = losses.sequence_logps(tok, resp_mask, reduction)
  n = batch.prompt.shape[0]
  return seq[:n], seq[n:]


@flax.struct.dataclass
class AlignmentInput:
  """One alignment step's input: the pairs and what the step needs of the reference.

  pairs: (chosen, rejected) per prompt. Exactly one of
  ref_params: the frozen reference's parameters (shared mesh: scored in the step), or
  ref_logps: (chosen, rejected) [B] sequence log-probs, scored on the reference's mesh.
  """
  pairs: B.PreferenceBatch
  ref_params: Optional[Any] = None
  ref_logps: Optional[tuple[Array, Array]] = None


def alignment_loss_fn(model, loss_name: str, beta: float, reduction: str = "sum"):
  """Loss of the registry on (chosen, rejected) against a frozen reference.

  batch: an `AlignmentInput`. Metrics: margins, log-probs, implicit-reward accuracy, a KL estimate
  (mean log pi - log ref over both responses: unbiased for the sequence KL
  when the responses are on-policy samples, i.e. online).
  """
  loss_of = losses.get(loss_name)

  def loss_fn(params, batch: AlignmentInput, rng):
    del rng
    if (batch.ref_params is None) == (batch.ref_logps is None):
      raise ValueError("AlignmentInput: give exactly one of ref_params and ref_logps")
    pairs = batch.pairs
    pc, pr = pair_logps(model, params, pairs, reduction)
    if batch.ref_logps is not None:  # scored on the reference's own mesh (roles.Reference)
      rc, rr = batch.ref_logps
    else:
      rc, rr = pair_logps(model, jax.lax.stop_gradient(batch.ref_params), pairs, reduction)
    rc, rr = jax.lax.stop_gradient(rc), jax.lax.stop_gradient(rr)
    per_example = loss_of(pc, pr, rc, rr, beta)
    h = losses.margin(pc, pr, rc, rr)
    metrics = {
        "margin": jnp.mean(h),
        "policy_chosen_logps": jnp.mean(pc),
        "policy_rejected_logps": jnp.mean(pr),
        "ref_chosen_logps": jnp.mean(rc),
        "ref_rejected_logps": jnp.mean(rr),
        "chosen_logratio": jnp.mean(pc - rc),
        "rejected_logratio": jnp.mean(pr - rr),
        "reward_accuracy": jnp.mean((h > 0).astype(jnp.float32)),
        "kl_estimate": 0.5 * jnp.mean((pc - rc) + (pr - rr)),
        "chosen_length": jnp.mean(jnp.sum(pairs.chosen_mask, -1).astype(jnp.float32)),
        "rejected_length": jnp.mean(jnp.sum(pairs.rejected_mask, -1).astype(jnp.float32)),
    }
    return jnp.mean(per_example), metrics

  return loss_fn
