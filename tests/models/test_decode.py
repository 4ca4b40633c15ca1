"""Incremental decoding (start_decode + decode_step) equals the full forward."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignment.models import heads, zoo

V, B, LP, T = 64, 3, 7, 6


def _ragged_prompts(seed):
  rng = np.random.default_rng(seed)
  lengths = np.array([LP, 3, 1])  # full, ragged, a single real token
  idx = np.arange(LP)[None]
  mask = (idx >= LP - lengths[:, None]).astype(np.int32)
  return np.where(mask, rng.integers(2, V, size=(B, LP)), 0).astype(np.int32), mask


def _incremental(model, params):
  """f(prompt, mask, response, cache_dtype) -> logits [B, T, V] by incremental decoding."""
  variables = {"params": params}
  start = jax.jit(lambda p, m, dtype: model.apply(variables, p, m, T, dtype,
                                                  method=heads.LanguageModel.start_decode),
                  static_argnums=2)
  step = jax.jit(lambda s, tok, t: model.apply(variables, s, tok, t,
                                               method=heads.LanguageModel.decode_step))

  def run(prompt, pmask, response, dtype):
    logits, state = start(prompt, pmask, dtype)
    out = [logits]
    for t in range(T - 1):
      logits, state = step(state, jnp.asarray(response[:, t]), jnp.asarray(t))
      out.append(logits)
    return np.asarray(jnp.stack(out, axis=1))

  return run


@pytest.mark.parametrize("name,overrides", [
    ("t5-nano", {}),
    ("t5-nano", {"remat": True, "num_decoder_layers": 2}),
    ("t5-nano", {"tie_embeddings": True}),
    ("llama-nano", {}),
    ("llama-nano", {"tie_embeddings": True, "num_kv_heads": 2}),
])
def test_incremental_logits_equal_full_forward(name, overrides):
  cfg = zoo.get(name, vocab_size=V, **overrides)
  model = heads.LanguageModel(cfg)
  prompt, pmask = _ragged_prompts(0)
  response = np.random.default_rng(1).integers(2, V, size=(B, T)).astype(np.int32)
  ones = np.ones_like(response)
  params = jax.jit(lambda k: nn.unbox(model.init(k, prompt, pmask, response, ones)))(
      jax.random.key(0))["params"]
  full = np.asarray(jax.jit(model.apply)({"params": params}, prompt, pmask, response, ones))
  scale = float(np.max(np.abs(full)))
  assert scale > 0.1  # the logits are not trivially zero
  run = _incremental(model, params)
  inc = run(prompt, pmask, response, jnp.float32)
  np.testing.assert_allclose(inc, full, atol=1e-5 * scale, rtol=0)
  # A bfloat16 cache rounds keys and values only: close, not equal.
  np.testing.assert_allclose(run(prompt, pmask, response, jnp.bfloat16), full,
                             atol=2e-2 * scale, rtol=0)
  # The cache really carries the context: another prompt changes every row's logits.
  other = run((prompt + 1) * pmask, pmask, response, jnp.float32)
  assert np.all(np.max(np.abs(other - inc), axis=(1, 2)) > 1e-3 * scale)
