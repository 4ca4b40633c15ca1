"""alignment.algorithms against written-out formulas, case by case."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignment import algorithms as A
from alignment import sampling


def _samples(tokens, mask):
  tokens, mask = np.asarray(tokens, np.int32), np.asarray(mask, np.int32)
  n = tokens.shape[0]
  prompt = np.arange(n * 3, dtype=np.int32).reshape(n, 3)
  zeros = jnp.zeros(tokens.shape, jnp.float32)
  return sampling.SampleOutput(tokens=jnp.asarray(tokens), mask=jnp.asarray(mask),
                               lengths=jnp.asarray(mask.sum(-1)), prompt=jnp.asarray(prompt),
                               prompt_mask=jnp.ones_like(jnp.asarray(prompt)),
                               finished=jnp.zeros((n,), bool), logprobs=zeros,
                               sampling_logprobs=zeros)


def test_debiased_cancels_a_position_bias():
  r12, r21 = jnp.asarray([2.0, -1.0, 0.5]), jnp.asarray([0.0, 1.0, 0.5])
  c = A.debiased(r12, r21)
  want = [1 / (1 + math.exp(-(a - b) / 2)) for a, b in zip([2.0, -1.0, 0.5], [0.0, 1.0, 0.5])]
  np.testing.assert_allclose(np.asarray(c.prob_first), want, rtol=1e-6)
  assert np.asarray(c.first_wins).tolist() == [True, False, False]  # a tie is not a win
  shifted = A.debiased(r12 + 3.0, r21 + 3.0)  # the same bias in both orders
  np.testing.assert_allclose(np.asarray(shifted.prob_first), np.asarray(c.prob_first), rtol=1e-6)


def test_pairs_take_the_winner_of_rows_2i_and_2i_plus_1():
  tokens = [[1, 1], [2, 2], [3, 3], [4, 4]]
  mask = [[1, 0], [1, 1], [1, 1], [1, 0]]
  out = _samples(tokens, mask)
  sampled = A.split_samples(out)
  y1, m1, y2, m2 = sampled.responses
  assert np.asarray(y1).tolist() == [[1, 1], [3, 3]] and np.asarray(y2).tolist() == [[2, 2],
                                                                                   [4, 4]]
  assert np.asarray(m1).tolist() == [[1, 0], [1, 1]] and np.asarray(m2).tolist() == [[1, 1],
                                                                                   [1, 0]]
  pairs = A.ranked_pairs(sampled, jnp.asarray([False, True]))
  assert np.asarray(pairs.chosen).tolist() == [[2, 2], [3, 3]]
  assert np.asarray(pairs.rejected).tolist() == [[1, 1], [4, 4]]
  assert np.asarray(pairs.chosen_mask).tolist() == [[1, 1], [1, 1]]
  assert np.asarray(pairs.rejected_mask).tolist() == [[1, 0], [1, 0]]
  assert np.asarray(pairs.prompt).tolist() == np.asarray(out.prompt)[0::2].tolist()


def test_judge_stats():
  s = A.judge_stats(jnp.asarray([0.9, 0.2, 0.5, 0.6]), jnp.asarray([True, False, False, True]),
                    jnp.asarray([3, 5, 4, 8]))
  np.testing.assert_allclose(float(s["judge_prob_chosen"]), (0.9 + 0.8 + 0.5 + 0.6) / 4, rtol=1e-6)
  assert float(s["judge_first_wins"]) == 0.5
  assert bool(s["judge_ok"])
  assert float(s["response_length"]) == 5.0 and float(s["tokens"]) == 20.0
  assert not bool(A.judge_stats(jnp.asarray([0.5, jnp.nan]), jnp.asarray([True, False]),
                                jnp.asarray([1, 1]))["judge_ok"])


def test_mixture_takes_whole_rows_at_its_rate():
  n = 4000
  policy = _samples(np.zeros((n, 3)), np.ones((n, 3)))
  reference = _samples(np.ones((n, 3)), np.ones((n, 3)))
  mixed = A.mix_samples(policy, reference, jax.random.PRNGKey(0), 0.25)
  rows = np.asarray(mixed.tokens)
  assert set(np.unique(rows.sum(-1))) <= {0, 3}  # a row is one sample or the other
  share = rows[:, 0].mean()
  assert abs(share - 0.25) < 4 * math.sqrt(0.25 * 0.75 / n)  # 4 standard errors
  assert (np.asarray(A.mix_samples(policy, reference, jax.random.PRNGKey(1), 0.0).tokens)
          == 0).all()


def test_win_rates():
  g, r = np.array([1.0, 0.0, 2.0]), np.array([0.0, 0.0, 3.0])
  np.testing.assert_allclose(A.soft_win(g, r, tau=0.5),
                             [1 / (1 + math.exp(-2.0)), 0.5, 1 / (1 + math.exp(2.0))])
  assert A.hard_win(g, r).tolist() == [1.0, 0.5, 0.0]


def test_classifier_outcome():
  # f = (pc - pr) - (sc - sr): +1, 0, -1
  out = A.classifier_outcome([-1.0, -2.0, -3.0], [-2.0, -2.0, -1.0], [-1.0, -1.0, -1.0],
                             [-1.0, -1.0, -0.0])
  assert out.tolist() == [1.0, 0.5, 0.0]


def test_agreement_leaves_golden_ties_out():
  a = A.agreement([True, True, False, False], [2.0, 1.0, 1.0, 0.0], [1.0, 3.0, 0.0, 0.0])
  assert a[:3].tolist() == [1.0, 0.0, 0.0] and math.isnan(a[3])


# ---------------------------------------------------------------------------
# Sibling designs: which pairs of a prompt's k samples a pairwise judge is asked
# ---------------------------------------------------------------------------


def test_sibling_pairs_zero_and_k_minus_1_are_every_pair_in_the_old_order():
  for k in (2, 3, 4, 8):
    every = tuple((i, j) for i in range(k) for j in range(i + 1, k))  # the loop's old order
    assert A.sibling_pairs(k, 0) == every == A.sibling_pairs(k, k - 1)


def test_sibling_pairs_are_a_balanced_circulant_design():
  for k in range(2, 11):
    for m in range(1, k - 1):
      if (k * m) % 2:
        with pytest.raises(ValueError, match="k m even"):
          A.sibling_pairs(k, m)
        continue
      pairs = A.sibling_pairs(k, m)
      assert all(0 <= i < j < k for i, j in pairs) and len(set(pairs)) == len(pairs)
      assert len(pairs) == k * m // 2  # each pair judged once: O(k m), not O(k^2)
      c = A.compared_matrix(pairs, k)
      np.testing.assert_array_equal(c, c.T)
      np.testing.assert_array_equal(c.sum(1), m)  # every sample meets m siblings
      # Written out: i meets i +- 1, ..., i +- m // 2 (mod k), and i + k / 2 for odd m.
      want = {frozenset((i, (i + s * d) % k)) for i in range(k) for s in (1, -1)
              for d in range(1, m // 2 + 1)}
      want |= {frozenset((i, (i + k // 2) % k)) for i in range(k)} if m % 2 else set()
      assert {frozenset(p) for p in pairs} == want
  assert A.sibling_pairs(4, 1) == ((0, 2), (1, 3))
  assert A.sibling_pairs(4, 2) == ((0, 1), (0, 3), (1, 2), (2, 3))
  assert A.sibling_pairs(8, 1) == ((0, 4), (1, 5), (2, 6), (3, 7))
  for bad in (-1, 4, 9):
    with pytest.raises(ValueError, match="siblings="):
      A.sibling_pairs(4, bad)


def test_sibling_rewards_of_a_design_by_hand():
  # k = 4, m = 2: pairs (0, 1), (0, 3), (1, 2), (2, 3) with P = .8, .6, .3, .5:
  # r0 = (.8 + .6) / 2, r1 = (.2 + .3) / 2, r2 = (.7 + .5) / 2, r3 = (.4 + .5) / 2.
  pairs = A.sibling_pairs(4, 2)
  probs = {p: jnp.asarray([v]) for p, v in zip(pairs, (0.8, 0.6, 0.3, 0.5))}
  matrix = A.sibling_win_matrix(probs, 4)
  r = np.asarray(A.sibling_win_rewards(matrix, A.compared_matrix(pairs, 4)))
  np.testing.assert_allclose(r, [[0.7, 0.25, 0.6, 0.45]], rtol=1e-6)
  # k = 4, m = 1: (0, 2) and (1, 3) only: r = (P02, P13, 1 - P02, 1 - P13).
  pairs = A.sibling_pairs(4, 1)
  probs = {(0, 2): jnp.asarray([0.9]), (1, 3): jnp.asarray([0.3])}
  matrix = A.sibling_win_matrix(probs, 4)
  np.testing.assert_allclose(np.asarray(matrix)[0, 0], [0, 0, 0.9, 0], rtol=1e-6)  # unjudged: 0
  r = np.asarray(A.sibling_win_rewards(matrix, A.compared_matrix(pairs, 4)))
  np.testing.assert_allclose(r, [[0.9, 0.3, 0.1, 0.7]], rtol=1e-6)


def test_sibling_rewards_of_a_design_follow_the_formula():
  """r_i = mean over the m siblings i was compared with of P(i beats j), written out
  in loops; a prompt's rewards sum to k / 2 as with every pair."""
  rng = np.random.default_rng(5)
  b = 3
  for k, m in ((4, 1), (4, 2), (6, 3), (8, 2), (7, 4)):
    pairs = A.sibling_pairs(k, m)
    probs = {p: rng.uniform(size=b).astype(np.float32) for p in pairs}
    want = np.zeros((b, k))
    for n in range(b):
      for i in range(k):
        wins = [probs[i, j][n] if (i, j) in probs else 1.0 - probs[j, i][n]
                for j in range(k) if (min(i, j), max(i, j)) in probs]
        assert len(wins) == m
        want[n, i] = sum(wins) / m
    matrix = A.sibling_win_matrix({p: jnp.asarray(v) for p, v in probs.items()}, k)
    got = np.asarray(A.sibling_win_rewards(matrix, A.compared_matrix(pairs, k)))
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(got.sum(1), k / 2, rtol=1e-6)
