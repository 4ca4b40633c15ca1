"""The performance rewrites compute what the plain code computes.

- `LanguageModel.shared_prompt_logits` (T5 encodes a pair's prompt once)
  equals the plain forward on the prompt repeated per response, values and
  gradients;
- `scoring.token_logprobs` (logsumexp and a one-hot pick) equals log_softmax
  and a gather, values and gradients.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignment import scoring
from alignment.data import batches as B
from alignment.models import heads, zoo
from alignment.train import steps


def _pairs(vocab, b=3, lp=7, lr=5, seed=0):
  rng = np.random.default_rng(seed)
  prompt = rng.integers(2, vocab, (b, lp)).astype(np.int32)
  prompt_mask = np.ones_like(prompt)
  prompt_mask[0, :3] = 0  # left padded
  prompt[0, :3] = 0
  chosen, rejected = (rng.integers(2, vocab, (b, lr)).astype(np.int32) for _ in range(2))
  chosen_mask, rejected_mask = np.ones_like(chosen), np.ones_like(rejected)
  chosen_mask[1, 3:] = 0  # right padded
  rejected_mask[2, 1:] = 0
  return B.PreferenceBatch(prompt, prompt_mask, chosen * chosen_mask, chosen_mask,
                           rejected * rejected_mask, rejected_mask)


def _plain_pair_logps(model, params, p):
  """What steps.pair_logps computed before: the prompt repeated, the plain forward."""
  cat = lambda a, b: jnp.concatenate([a, b], 0)
  resp, mask = cat(p.chosen, p.rejected), cat(p.chosen_mask, p.rejected_mask)
  logits = model.apply({"params": params}, cat(p.prompt, p.prompt), cat(p.prompt_mask,
                                                                       p.prompt_mask), resp, mask)
  logp = jax.nn.log_softmax(logits, -1)
  tok = jnp.take_along_axis(logp, resp[..., None], -1)[..., 0] * mask
  seq = jnp.sum(tok, -1)
  n = p.prompt.shape[0]
  return seq[:n], seq[n:]


@pytest.mark.parametrize("name", ["t5-nano", "llama-nano"])
def test_shared_prompt_pair_logps_equal_the_plain_forward(name):
  cfg = zoo.get(name)
  model = heads.LanguageModel(cfg)
  p = _pairs(cfg.vocab_size)
  params = jax.jit(model.init)(jax.random.key(0), p.prompt, p.prompt_mask, p.chosen,
                               p.chosen_mask)["params"]

  def value_and_grad(fn):
    weighted = lambda prm: sum(jnp.sum(x * w) for x, w in zip(fn(prm), (1.0, -0.5)))
    return jax.jit(lambda prm: (fn(prm), jax.grad(weighted)(prm)))

  (ours, ga) = value_and_grad(lambda prm: steps.pair_logps(model, prm, p, "sum"))(params)
  (plain, gb) = value_and_grad(lambda prm: _plain_pair_logps(model, prm, p))(params)
  for a, b in zip(ours, plain):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-4)
  for path, x in jax.tree_util.tree_leaves_with_path(ga):
    y = dict(jax.tree_util.tree_leaves_with_path(gb))[path]
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-5,
                               err_msg=jax.tree_util.keystr(path))


def test_shared_prompt_rejects_a_ragged_response_batch():
  cfg = zoo.get("t5-nano")
  model = heads.LanguageModel(cfg)
  p = _pairs(cfg.vocab_size)
  params = jax.eval_shape(model.init, jax.random.key(0), p.prompt, p.prompt_mask, p.chosen,
                          p.chosen_mask)
  resp = np.concatenate([p.chosen, p.chosen[:1]])
  with pytest.raises(ValueError, match="multiple"):
    jax.eval_shape(lambda prm: model.apply(prm, p.prompt, p.prompt_mask, resp,
                                           np.ones_like(resp), method="shared_prompt_logits"),
                   params)


def test_token_logprobs_values_and_gradients_equal_log_softmax_and_gather():
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(3, 4, 37)) * 5, jnp.float32)
  tokens = jnp.asarray(rng.integers(0, 37, (3, 4)), jnp.int32)
  mask = jnp.asarray(rng.integers(0, 2, (3, 4)), jnp.int32)

  def plain(x):
    logp = jax.nn.log_softmax(x, -1)
    return jnp.where(mask > 0, jnp.take_along_axis(logp, tokens[..., None], -1)[..., 0], 0.0)

  np.testing.assert_allclose(scoring.token_logprobs(logits, tokens, mask), plain(logits),
                             rtol=1e-6, atol=1e-5)
  w = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
  g_ours = jax.grad(lambda x: jnp.sum(scoring.token_logprobs(x, tokens, mask) * w))(logits)
  g_plain = jax.grad(lambda x: jnp.sum(plain(x) * w))(logits)
  np.testing.assert_allclose(g_ours, g_plain, rtol=1e-5, atol=1e-6)
