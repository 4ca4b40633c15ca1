"""scoring.py against written-out formulas and brute-force enumeration."""
import itertools

import flax.linen as nn
import jax
import numpy as np
import pytest

from alignment import scoring
from alignment.data.batches import SFTBatch
from alignment.models import heads, zoo


def test_token_and_sequence_logprobs_match_the_formula():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 4, 7)).astype(np.float32) * 3
  tokens = rng.integers(0, 7, size=(3, 4)).astype(np.int32)
  mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]], np.int32)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  expected = np.take_along_axis(logp, tokens[..., None], -1)[..., 0] * mask
  np.testing.assert_allclose(scoring.token_logprobs(logits, tokens, mask), expected, atol=1e-6)
  np.testing.assert_allclose(scoring.sequence_logprob(logits, tokens, mask), expected.sum(1),
                             atol=1e-5)
  np.testing.assert_allclose(scoring.mean_token_logprob(logits, tokens, mask),
                             [expected[0].mean(), expected[1, :2].mean(), 0.0], atol=1e-6)


def test_per_token_kl_matches_the_formula():
  rng = np.random.default_rng(1)
  p_logits, q_logits = rng.normal(size=(2, 2, 3, 5)).astype(np.float32)
  mask = np.array([[1, 1, 0], [1, 0, 0]], np.int32)
  p = np.exp(p_logits) / np.exp(p_logits).sum(-1, keepdims=True)
  q = np.exp(q_logits) / np.exp(q_logits).sum(-1, keepdims=True)
  expected = (p * np.log(p / q)).sum(-1) * mask
  np.testing.assert_allclose(scoring.per_token_kl(p_logits, q_logits, mask), expected, atol=1e-6)
  np.testing.assert_allclose(scoring.exact_kl(p_logits, q_logits, mask), expected.sum(1),
                             atol=1e-6)
  assert np.all(np.asarray(scoring.exact_kl(p_logits, p_logits, mask)) == 0)


V, T = 4, 3  # 4**3 = 64 responses per prompt: every one is enumerated


@pytest.mark.parametrize("name", ["t5-nano", "llama-nano"])
def test_exact_kl_equals_sequence_kl_by_enumeration(name):
  """E_{y~pi}[sum_t KL(pi(.|x,y<t) || ref(.|x,y<t))] = KL(pi(.|x) || ref(.|x)).

  Both sides are computed exactly over all V**T responses of length T (every
  token real, so pi(.|x) is a distribution over those sequences); the right
  side uses only sequence log-probs, the left only `scoring.kl_to_reference`.
  """
  model = heads.LanguageModel(zoo.get(name, vocab_size=V))
  prompts = np.array([[0, 2, 3, 1], [3, 3, 2, 2]], np.int32)
  pmask = (np.arange(4)[None] >= np.array([[1], [0]])).astype(np.int32)  # ragged
  ys = np.array(list(itertools.product(range(V), repeat=T)), np.int32)
  n = len(ys)
  batch = SFTBatch(np.repeat(prompts, n, 0), np.repeat(pmask, n, 0), np.tile(ys, (2, 1)),
                   np.ones((2 * n, T), np.int32))
  init = jax.jit(lambda k: nn.unbox(model.init(k, batch.prompt, batch.prompt_mask,
                                               batch.response, batch.response_mask))["params"])
  # The reference is a scaled-down copy: related to pi, but far enough for a clear KL.
  policy = init(jax.random.key(0))
  ref = jax.tree.map(lambda a, b: a + 0.5 * (b - a), policy, init(jax.random.key(1)))

  score = jax.jit(lambda p: scoring.score(model, p, batch)["sum"])
  logpi = np.asarray(score(policy), np.float64).reshape(2, n)
  logref = np.asarray(score(ref), np.float64).reshape(2, n)
  pi = np.exp(logpi)
  np.testing.assert_allclose(pi.sum(1), 1.0, atol=1e-5)  # the enumeration is complete
  sequence_kl = np.sum(pi * (logpi - logref), axis=1)

  kl = jax.jit(lambda p, r: scoring.kl_to_reference(model, p, r, batch))
  per_response = np.asarray(kl(policy, ref), np.float64).reshape(2, n)
  expected_token_kl = np.sum(pi * per_response, axis=1)

  assert np.all(sequence_kl > 0.05)  # a KL worth testing
  rtol = 1e-4
  np.testing.assert_allclose(expected_token_kl, sequence_kl, rtol=rtol)
  # The check is specific: KL in the other direction, or an unweighted mean
  # over responses, misses it by far more than the tolerance.
  reverse = np.asarray(kl(ref, policy), np.float64).reshape(2, n)
  assert np.all(np.abs(np.sum(pi * reverse, 1) - sequence_kl) > 10 * rtol * sequence_kl)
  assert np.all(np.abs(per_response.mean(1) - sequence_kl) > 10 * rtol * sequence_kl)
  # Same parameters: zero.
  np.testing.assert_allclose(np.asarray(kl(policy, policy)), 0.0, atol=1e-6)
