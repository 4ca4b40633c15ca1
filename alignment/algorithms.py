"""The maths of online alignment and its evaluation, as small pure functions.

Each is a few lines, free of meshes and configs, and tested alone against its
written-out formula (tests/test_algorithms.py). Shapes: B prompts, T response
tokens; "two samples per prompt" are rows 2i and 2i + 1 of a [2B, ...] batch.

- `debiased`: a pairwise judge's verdict from its logits in both orders.
- `split_samples`, `ranked_pairs`: two samples per prompt -> `SampledPairs`
  (y1, y2) and, with the verdict, -> (winner, loser) pairs.
- `judge_stats`: the judge's and the samples' batch statistics.
- `mix_samples`: row by row, the reference's sample with probability a.
- `soft_win`, `hard_win`: P(policy beats reference) from golden scores.
- `classifier_outcome`: the policy as a classifier of a labelled pair.
- `agreement`: a judge's verdict against the golden one, NaN on golden ties.
"""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from alignment.data import batches as B

Array = jax.Array


@flax.struct.dataclass
class Comparison:
  prob_first: Any   # [B] P(y1 beats y2)
  first_wins: Any   # [B] bool


def debiased(r12: Array, r21: Array) -> Comparison:
  """From the logits of P(y1 beats y2) asked as (y1, y2) and as (y2, y1):
  P = sigmoid((r12 - r21) / 2), y1 wins iff r12 > r21. A judge that prefers a
  position adds the same bias to both logits, which the difference cancels."""
  diff = r12 - r21
  return Comparison(prob_first=jax.nn.sigmoid(diff / 2.0), first_wins=diff > 0)


def split_samples(out) -> B.SampledPairs:
  """The two samples of each prompt (rows 2i, 2i + 1 of a sampler output)."""
  return B.SampledPairs(out.prompt[0::2], out.prompt_mask[0::2], out.tokens[0::2],
                        out.mask[0::2], out.tokens[1::2], out.mask[1::2])


def ranked_pairs(sampled: B.SampledPairs, first_wins) -> B.PreferenceBatch:
  """(winner, loser) pairs: response_1 is chosen where first_wins, else response_2."""
  w = first_wins[:, None]
  y1, m1, y2, m2 = sampled.responses
  return B.PreferenceBatch(
      prompt=sampled.prompt, prompt_mask=sampled.prompt_mask,
      chosen=jnp.where(w, y1, y2), chosen_mask=jnp.where(w, m1, m2),
      rejected=jnp.where(w, y2, y1), rejected_mask=jnp.where(w, m2, m1))


def judge_stats(prob_first, first_wins, lengths) -> dict:
  """Batch statistics of the judge and the samples (scalars): the judge's mean
  confidence in its chosen response, how often the first sample won, whether
  every probability is finite, and the samples' mean length and token count."""
  prob = jnp.asarray(prob_first, jnp.float32)
  return {"judge_prob_chosen": jnp.mean(jnp.maximum(prob, 1.0 - prob)),
          "judge_first_wins": jnp.mean(jnp.asarray(first_wins, jnp.float32)),
          "judge_ok": jnp.all(jnp.isfinite(prob)),
          "response_length": jnp.mean(lengths.astype(jnp.float32)),
          "tokens": jnp.sum(lengths.astype(jnp.float32))}


def mix_samples(from_policy, from_reference, key, rate: float):
  """Row by row, the reference's sample with probability `rate` (every field of
  the two sample pytrees has the same leading rows)."""
  take_ref = jax.random.bernoulli(key, rate, (from_policy.tokens.shape[0],))
  pick = lambda a, b: jnp.where(take_ref.reshape((-1,) + (1,) * (a.ndim - 1)), b, a)
  return jax.tree.map(pick, from_policy, from_reference)


def soft_win(policy_scores: np.ndarray, reference_scores: np.ndarray, tau: float) -> np.ndarray:
  """The golden judge's P(policy's response beats the reference's), per prompt:
  sigmoid((g_pi - g_ref) / tau)."""
  diff = (np.asarray(policy_scores, np.float64) - np.asarray(reference_scores, np.float64))
  return 1.0 / (1.0 + np.exp(-diff / tau))


def hard_win(policy_scores: np.ndarray, reference_scores: np.ndarray) -> np.ndarray:
  """1 where the policy's golden score is higher, 1/2 on a tie, else 0."""
  g, r = np.asarray(policy_scores), np.asarray(reference_scores)
  return (g > r) + 0.5 * (g == r)


def classifier_outcome(pc, pr, sc, sr) -> np.ndarray:
  """The policy as a classifier of (chosen, rejected) pairs: with
  f = log[pi(c)/pi(r)] - log[pi_sft(c)/pi_sft(r)], 1 where f > 0, 1/2 where
  f = 0, else 0 (per pair)."""
  f = (np.asarray(pc) - np.asarray(pr)) - (np.asarray(sc) - np.asarray(sr))
  return (f > 0) + 0.5 * (f == 0)


def agreement(first_wins: np.ndarray, golden_first: np.ndarray,
              golden_second: np.ndarray) -> np.ndarray:
  """1 where a judge's verdict matches the golden judge's (y1 wins iff its
  golden score is higher), 0 where not, NaN where the golden scores tie."""
  g1, g2 = np.asarray(golden_first), np.asarray(golden_second)
  same = (np.asarray(first_wins, bool) == (g1 > g2)).astype(np.float64)
  return np.where(g1 == g2, np.nan, same)
