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

from alignment import algorithms as A
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


def reward_model_loss_fn(model):
  """Bradley-Terry: P(chosen beats rejected) = sigmoid(r(x, chosen) - r(x, rejected)),
  maximum likelihood on the golden labels. Order cannot matter (the margin is
  antisymmetric), so nothing is randomised; both responses share one forward."""
  def loss_fn(params, batch: B.PreferenceBatch, rng):
    del rng
    both = lambda a, b: jnp.concatenate([a, b], 0)
    r = model.apply({"params": params}, both(batch.prompt, batch.prompt),
                    both(batch.prompt_mask, batch.prompt_mask),
                    both(batch.chosen, batch.rejected),
                    both(batch.chosen_mask, batch.rejected_mask))
    n = batch.prompt.shape[0]
    margin = r[:n] - r[n:]
    loss = jnp.mean(jax.nn.softplus(-margin))  # -log sigmoid(margin)
    return loss, {"accuracy": jnp.mean((margin > 0).astype(jnp.float32)),
                  "reward_margin": jnp.mean(margin), "reward_abs": jnp.mean(jnp.abs(r))}
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


# ---------------------------------------------------------------------------
# Policy gradient (online RLOO and GRPO)
# ---------------------------------------------------------------------------


@flax.struct.dataclass
class RolloutInput:
  """One policy-gradient update's input: N rows, k sampled responses per prompt.

  prompt, prompt_mask [N, Lp] (each prompt repeated k times); response,
  response_mask [N, T]; advantages [N] (computed over each prompt's k samples
  before any minibatching); old_logps [N, T] the sampling policy's token
  log-probs (the ratio's denominator); ref_logps [N, T] the reference's token
  log-probs; ref_params: the reference's parameters with kl="exact" (its full
  distributions), else None.
  """
  prompt: Array
  prompt_mask: Array
  response: Array
  response_mask: Array
  advantages: Array
  old_logps: Array
  ref_logps: Array
  ref_params: Optional[Any] = None


def policy_gradient_loss_fn(model, method: str, kl: str, kl_coef: float, clip_eps: float):
  """RLOO or GRPO on a `RolloutInput`, with the KL to the reference as a loss when
  kl is "k3" or "exact" (kl="reward" is already in the advantages).

  rloo: -mean_i A_i log pi(y_i) (REINFORCE), KL loss per sequence (summed over
  tokens, the objective's r - beta KL(y)). grpo: the clipped token-level
  surrogate (`algorithms.clipped_surrogate_loss`), KL loss per token (mean over a
  response's tokens, then over responses, as GRPO's). Metrics: the surrogate,
  k1 and k3 KL estimates per sequence, the ratio's mean and how often it clips.
  """
  def loss_fn(params, batch: RolloutInput, rng):
    del rng
    mask = batch.response_mask
    m = mask.astype(jnp.float32)
    logits = model.apply({"params": params}, batch.prompt, batch.prompt_mask, batch.response,
                         mask)
    logp_t = scoring.token_logprobs(logits, batch.response, mask)
    ref_t = jax.lax.stop_gradient(batch.ref_logps)
    if method == "rloo":
      surrogate = A.reinforce_loss(jnp.sum(logp_t, -1), batch.advantages)
      reduce = lambda x_bt: jnp.mean(jnp.sum(x_bt * m, -1))  # per sequence
    else:
      surrogate = A.clipped_surrogate_loss(logp_t, batch.old_logps, batch.advantages, mask,
                                           clip_eps)
      reduce = lambda x_bt: A.masked_mean(x_bt, mask)  # per token
    k3_t = A.kl_k3(logp_t, ref_t) * m
    loss = surrogate
    if kl == "k3":
      loss = loss + kl_coef * reduce(k3_t)
    elif kl == "exact":
      if batch.ref_params is None:
        raise ValueError("RolloutInput: kl='exact' needs ref_params")
      ref_logits = model.apply({"params": jax.lax.stop_gradient(batch.ref_params)},
                               batch.prompt, batch.prompt_mask, batch.response, mask)
      loss = loss + kl_coef * reduce(scoring.per_token_kl(logits, ref_logits, mask))
    ratio = jnp.exp(logp_t - jax.lax.stop_gradient(batch.old_logps))
    clipped = (jnp.abs(ratio - 1.0) > clip_eps).astype(jnp.float32) * m
    n_tok = jnp.maximum(jnp.sum(m), 1.0)
    return loss, {
        "surrogate": surrogate,
        "kl_k1": jnp.mean(jnp.sum((logp_t - ref_t) * m, -1)),
        "kl_k3": jnp.mean(jnp.sum(k3_t, -1)),
        "ratio_mean": jnp.sum(ratio * m) / n_tok,
        "clip_fraction": jnp.sum(clipped) / n_tok,
        "advantage_abs": jnp.mean(jnp.abs(batch.advantages)),
        "response_length": jnp.mean(jnp.sum(m, -1)),
    }

  return loss_fn
