"""Registry of pure per-example preference losses (docs/paper.md, "Losses").

Every loss has one signature,

    loss = get(name)(policy_chosen_logps, policy_rejected_logps,
                     ref_chosen_logps, ref_rejected_logps, beta)   # [B]

with sequence log-probabilities [B] of the chosen (winner, y_w) and rejected
(loser, y_l) responses under the policy and the frozen reference (the SFT
policy). h is the log-ratio margin

    h = [log pi(y_w) - log ref(y_w)] - [log pi(y_l) - log ref(y_l)].

- ipo:       (beta * h - 1/2)^2, the paper's form. Azar et al. write
             (h - 1/(2 beta))^2 = (beta * h - 1/2)^2 / beta^2: same minimiser,
             gradients smaller by beta^2 (use a larger learning rate to match).
- dpo:       -log sigmoid(beta * h), computed as softplus(-beta * h) so that
             extreme margins neither overflow nor give NaN.
- slic:      max(0, 1 - beta * h), the reference-normalised hinge.
- best_of_2: -log pi(y_w): SFT on the winner; ignores the rest.

Sequence log-probs are SUMMED over response tokens by default (the paper's
definition); `sequence_logps(..., reduction="mean")` gives the per-token mean
that TRL's IPO uses. The reduction is a config choice (`loss.reduction`), made
where the log-probs are computed, so every loss sees the same kind of number.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

Array = jax.Array
LossFn = Callable[[Array, Array, Array, Array, float], Array]

_REGISTRY: dict[str, LossFn] = {}


def register(name: str):
  def wrap(fn: LossFn) -> LossFn:
    _REGISTRY[name] = fn
    return fn
  return wrap


def names() -> list[str]:
  return sorted(_REGISTRY)


def get(name: str) -> LossFn:
  try:
    return _REGISTRY[name]
  except KeyError:
    raise ValueError(f"unknown loss {name!r}; registered: {names()}") from None


def margin(policy_chosen, policy_rejected, ref_chosen, ref_rejected) -> Array:
  """h: the policy's log-ratio margin over the reference."""
  return (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)


@register("ipo")
def ipo(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta):
  h = margin(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
  return (beta * h - 0.5) ** 2


@register("dpo")
def dpo(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta):
  h = margin(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
  return jax.nn.softplus(-beta * h)


@register("slic")
def slic(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta):
  h = margin(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
  return jnp.maximum(0.0, 1.0 - beta * h)


@register("best_of_2")
def best_of_2(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta):
  del policy_rejected, ref_chosen, ref_rejected, beta
  return -policy_chosen


def sequence_logps(token_logps_bl: Array, mask_bl: Array, reduction: str = "sum") -> Array:
  """[B, L] per-token log-probs -> [B] sequence log-probs (sum, or per-token mean)."""
  mask = mask_bl.astype(token_logps_bl.dtype)
  total = jnp.sum(token_logps_bl * mask, axis=-1)
  if reduction == "sum":
    return total
  if reduction == "mean":
    return total / jnp.maximum(jnp.sum(mask, axis=-1), 1.0)
  raise ValueError(f"reduction={reduction!r}: choose 'sum' or 'mean'")
