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

Policy gradient, k samples per prompt (rewards [B, k]):
- `rloo_advantages`, `grpo_advantages`, `pg_advantages`: leave-one-out and
  group-normalised, after the KL penalty when it is in the reward.
- `kl_k1`, `kl_k3`, `kl_shaped_rewards`: KL estimators and KL as a reward penalty.
- `sibling_pairs`, `compared_matrix`, `sibling_win_matrix`, `sibling_win_rewards`:
  a pairwise judge's rewards, each sample's mean probability of beating the
  siblings it is compared with: all k - 1 (k(k - 1)/2 pairs a prompt), or m in a
  balanced design (k m / 2 pairs; `rl.siblings`).
- `reinforce_loss`, `clipped_surrogate_loss`, `masked_mean`: the surrogates.
- `truncated_importance_weights`: the correction for stale samples.
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


# ---------------------------------------------------------------------------
# Policy gradient (RLOO, GRPO): k samples per prompt, rewards [B, k]
# ---------------------------------------------------------------------------


def rloo_advantages(rewards_bk: Array) -> Array:
  """REINFORCE leave-one-out: A_i = r_i - mean_{j != i} r_j over the k samples of
  a prompt (k >= 2), = k / (k - 1) * (r_i - mean_j r_j)."""
  k = rewards_bk.shape[-1]
  if k < 2:
    raise ValueError(f"RLOO needs k >= 2 samples per prompt, got {k}")
  total = jnp.sum(rewards_bk, -1, keepdims=True)
  return rewards_bk - (total - rewards_bk) / (k - 1)


def grpo_advantages(rewards_bk: Array, eps: float = 1e-4) -> Array:
  """GRPO's group-normalised advantages: (r_i - mean) / (std + eps) over the k
  samples of a prompt (population std, ddof 0); a group of equal rewards gives 0."""
  mean = jnp.mean(rewards_bk, -1, keepdims=True)
  std = jnp.std(rewards_bk, -1, keepdims=True)
  return (rewards_bk - mean) / (std + eps)


def kl_k1(logp: Array, ref_logp: Array) -> Array:
  """k1 = log pi - log pi_ref: unbiased for KL(pi || pi_ref) on samples of pi."""
  return logp - ref_logp


def kl_k3(logp: Array, ref_logp: Array) -> Array:
  """k3 = pi_ref/pi - 1 - log(pi_ref/pi) >= 0: unbiased for KL(pi || pi_ref) on
  samples of pi, with less variance than k1. Its gradient as a loss on samples of
  pi is, in expectation, that of KL(pi_ref || pi), not KL(pi || pi_ref) (tested by
  enumeration): as a loss it pulls towards pi_ref, with another optimum."""
  d = ref_logp - logp
  return jnp.exp(d) - d - 1.0


def kl_shaped_rewards(rewards: Array, seq_logp: Array, seq_ref_logp: Array,
                      beta: float) -> Array:
  """KL as a reward penalty (k1, sequence level): r - beta (log pi(y) - log pi_ref(y)),
  no gradient through the penalty. Its fixed point is pi* ~ pi_ref exp(r / beta)."""
  return rewards - beta * jax.lax.stop_gradient(kl_k1(seq_logp, seq_ref_logp))


def sibling_pairs(k: int, siblings: int = 0) -> tuple[tuple[int, int], ...]:
  """The pairs (i, j), i < j, of a prompt's k samples that a pairwise judge is asked
  about, each once (both orders in the judge's one call).

  siblings = 0 or k - 1: all k(k - 1)/2 pairs, in the order (0, 1), (0, 2), ...,
  (k - 2, k - 1). siblings = m in [1, k - 2], k m even: a circulant design in which
  every sample meets m siblings, k m / 2 pairs: i with i +- d (mod k) for
  d = 1 .. m // 2 and, for odd m, with i + k/2. The samples of a prompt are
  independent draws, so a fixed design is as good as a random one; being regular,
  each reward averages m verdicts and a prompt's rewards still sum to k / 2."""
  if siblings in (0, k - 1):
    return tuple((i, j) for i in range(k) for j in range(i + 1, k))
  if not 1 <= siblings <= k - 2 or (k * siblings) % 2:
    raise ValueError(f"siblings={siblings} with k={k} samples: 0 or k - 1 (all), or m in "
                     "[1, k - 2] with k m even")
  offsets = list(range(1, siblings // 2 + 1)) + ([k // 2] if siblings % 2 else [])
  return tuple(sorted({tuple(sorted((i, (i + d) % k))) for d in offsets for i in range(k)}))


def compared_matrix(pairs, k: int) -> np.ndarray:
  """[k, k] float32, C_ij = 1 where samples i and j are compared (`sibling_pairs`),
  0 elsewhere and on the diagonal (symmetric)."""
  c = np.zeros((k, k), np.float32)
  for i, j in pairs:
    c[i, j] = c[j, i] = 1.0
  return c


def sibling_win_matrix(pair_probs, k: int) -> Array:
  """[B, k, k] P(i beats j) of each prompt's k samples from a pairwise judge's
  verdicts on the judged sibling pairs, pair_probs = {(i, j): [B] P(i beats j)}
  for i < j (each pair is judged once, in that order; all k(k - 1)/2 of them or
  a `sibling_pairs` design):
      P_ij = pair_probs[i, j],  P_ji = 1 - P_ij,  P_ii = 0 and 0 for pairs not
      judged (ignored below)."""
  zero = jnp.zeros_like(next(iter(pair_probs.values())))
  entry = lambda i, j: (zero if i == j else pair_probs[i, j] if (i, j) in pair_probs
                        else 1.0 - pair_probs[j, i] if (j, i) in pair_probs else zero)
  return jnp.stack([jnp.stack([entry(i, j) for j in range(k)], -1) for i in range(k)], 1)


def sibling_win_rewards(prob_bkk: Array, compared=None) -> Array:
  """[B, k] rewards of a pairwise judge: each sample's mean probability of beating
  the siblings it was compared with, from P(i beats j) [B, k, k]
  (`sibling_win_matrix`; the diagonal is ignored). compared = None: all k - 1,
  r_i = 1/(k - 1) sum_{j != i} P_ij; compared = C [k, k] (`compared_matrix`):
  r_i = sum_j C_ij P_ij / sum_j C_ij."""
  k = prob_bkk.shape[-1]
  if compared is None:
    off = 1.0 - jnp.eye(k, dtype=prob_bkk.dtype)
    return jnp.sum(prob_bkk * off, -1) / (k - 1)
  c = np.asarray(compared, np.float32)
  return jnp.sum(prob_bkk * c.astype(prob_bkk.dtype), -1) / c.sum(-1).astype(prob_bkk.dtype)


def masked_mean(x_bt: Array, mask_bt: Array) -> Array:
  """Per-sequence mean over real tokens, then the mean over sequences (GRPO's
  1/G sum_i 1/|o_i| sum_t)."""
  m = mask_bt.astype(x_bt.dtype)
  return jnp.mean(jnp.sum(x_bt * m, -1) / jnp.maximum(jnp.sum(m, -1), 1.0))


def reinforce_loss(seq_logp: Array, advantages: Array) -> Array:
  """-mean_i A_i log pi(y_i) with A fixed: the REINFORCE (RLOO) surrogate."""
  return -jnp.mean(jax.lax.stop_gradient(advantages) * seq_logp)


def clipped_surrogate_loss(logp_bt: Array, old_logp_bt: Array, advantages_b: Array,
                           mask_bt: Array, clip_eps: float) -> Array:
  """PPO/GRPO's clipped objective, token level: with the ratio rho_t =
  pi(y_t) / pi_old(y_t), -min(rho_t A, clip(rho_t, 1 - eps, 1 + eps) A), averaged
  with `masked_mean`. At pi = pi_old its gradient is REINFORCE's, token by token."""
  ratio = jnp.exp(logp_bt - jax.lax.stop_gradient(old_logp_bt))
  a = jax.lax.stop_gradient(advantages_b)[:, None]
  per_token = -jnp.minimum(ratio * a, jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * a)
  return masked_mean(per_token, mask_bt)


def pg_advantages(method: str, rewards_bk: Array, seq_logp_bk: Array, seq_ref_logp_bk: Array,
                  kl: str, kl_coef: float, grpo_eps: float = 1e-4) -> Array:
  """[B, k] advantages of RLOO or GRPO from the rewards of each prompt's k samples,
  the KL to the reference as a reward penalty first when kl == "reward"."""
  if kl == "reward":
    rewards_bk = kl_shaped_rewards(rewards_bk, seq_logp_bk, seq_ref_logp_bk, kl_coef)
  if method == "rloo":
    return rloo_advantages(rewards_bk)
  if method == "grpo":
    return grpo_advantages(rewards_bk, grpo_eps)
  raise ValueError(f"unknown policy-gradient method {method!r}: rloo or grpo")


def truncated_importance_weights(target_logp: Array, behaviour_logp: Array,
                                 cap: float) -> Array:
  """min(pi_target(y) / pi_behaviour(y), cap), no gradient: the correction for
  samples drawn by parameters some steps old (truncated importance sampling)."""
  return jax.lax.stop_gradient(jnp.minimum(jnp.exp(target_logp - behaviour_logp), cap))
