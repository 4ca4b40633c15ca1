"""alignment.algorithms against written-out formulas, case by case."""
import math

import jax
import jax.numpy as jnp
import numpy as np

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
