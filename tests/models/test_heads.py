"""Scalar heads read a state that has seen every real token of the response(s).

The backbones read responses shifted right (position t has read tokens < t),
so the read-out must sit one past the last real token. These tests change
only the LAST real token of y2 (or of y) and require the score to change: a
head reading at the last token itself cannot see it and fails them.
"""
import jax
import numpy as np
import pytest

from alignment.models import heads, zoo


def _pair_inputs(rng, b=4, lp=6, lr=5, full=False):
  prompt = rng.integers(3, 30, (b, lp)).astype(np.int32)
  pmask = np.ones_like(prompt)
  y = rng.integers(3, 30, (2, b, lr)).astype(np.int32)
  lengths = np.full((b,), lr) if full else rng.integers(2, lr, (b,))
  mask = (np.arange(lr)[None] < lengths[:, None]).astype(np.int32)
  y = np.where(mask[None] == 1, y, 0)
  return prompt, pmask, y[0], mask, y[1], mask.copy(), lengths


@pytest.mark.parametrize("name", ["t5-nano", "llama-nano"])
@pytest.mark.parametrize("full", [False, True])
def test_pairwise_read_out_sees_the_last_token_of_y2(name, full):
  cfg = zoo.get(name, vocab_size=32)
  model = heads.PairwisePreferenceModel(cfg)
  rng = np.random.default_rng(0)
  p, pm, y1, m1, y2, m2, lengths = _pair_inputs(rng, full=full)
  params = model.init(jax.random.key(0), p, pm, y1, m1, y2, m2)["params"]
  # A score head of scale 1 so that a change in the read-out state shows clearly.
  params = jax.tree_util.tree_map_with_path(
      lambda path, x: np.ones_like(x) if "score_head" in str(path) and "kernel" in str(path)
      else x, params)
  score = jax.jit(lambda *a: model.apply({"params": params}, *a))
  base = np.asarray(score(p, pm, y1, m1, y2, m2))
  last = lengths - 1
  y2_changed = y2.copy()
  y2_changed[np.arange(len(last)), last] = (y2[np.arange(len(last)), last] % 20) + 5
  assert (y2_changed != y2).any(axis=1).all()
  changed = np.asarray(score(p, pm, y1, m1, y2_changed, m2))
  assert (np.abs(changed - base) > 1e-6).all(), (base, changed)
  # What lies past the real tokens is never read.
  y2_junk = np.where(m2 == 1, y2, 7)
  np.testing.assert_allclose(np.asarray(score(p, pm, y1, m1, y2_junk, m2)), base, atol=1e-6)


def test_reward_read_out_sees_the_last_token():
  cfg = zoo.get("t5-nano", vocab_size=32)
  model = heads.RewardModel(cfg)
  rng = np.random.default_rng(1)
  p, pm, y, m, _, _, lengths = _pair_inputs(rng)
  params = model.init(jax.random.key(0), p, pm, y, m)["params"]
  score = jax.jit(lambda *a: model.apply({"params": params}, *a))
  base = np.asarray(score(p, pm, y, m))
  y_changed = y.copy()
  rows = np.arange(len(lengths))
  y_changed[rows, lengths - 1] = (y[rows, lengths - 1] % 20) + 5
  assert (np.abs(np.asarray(score(p, pm, y_changed, m)) - base) > 1e-7).all()


def test_read_out_index():
  mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 1, 0]], np.int32)
  np.testing.assert_array_equal(np.asarray(heads.read_out_index(mask)), [2, 4, 0, 3])
