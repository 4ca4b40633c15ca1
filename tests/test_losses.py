"""Losses against their written-out formulas (docs/paper.md), including extreme margins."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignment import losses

RNG = np.random.default_rng(0)
PC, PR, RC, RR = (RNG.normal(-20, 5, size=16) for _ in range(4))


def _h(i):
  return (PC[i] - RC[i]) - (PR[i] - RR[i])


FORMULAS = {
    "ipo": lambda i, b: (b * _h(i) - 0.5) ** 2,
    "dpo": lambda i, b: -math.log(1.0 / (1.0 + math.exp(-b * _h(i)))),
    "slic": lambda i, b: max(0.0, 1.0 - b * _h(i)),
    "best_of_2": lambda i, b: -PC[i],
}


@pytest.mark.parametrize("name", sorted(FORMULAS))
@pytest.mark.parametrize("beta", [0.1, 0.5, 1.0])
def test_matches_formula(name, beta):
  got = np.asarray(losses.get(name)(*(jnp.asarray(a, jnp.float32) for a in (PC, PR, RC, RR)),
                                    beta))
  want = np.array([FORMULAS[name](i, beta) for i in range(len(PC))])
  np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


def test_registry_names_and_errors():
  assert losses.names() == ["best_of_2", "dpo", "ipo", "slic"]
  with pytest.raises(ValueError, match="unknown loss 'ppo'"):
    losses.get("ppo")


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_extreme_margins_are_finite(name):
  big = jnp.array([1e4, -1e4, 3e4, -3e4], jnp.float32)
  zero = jnp.zeros_like(big)
  fn = lambda pc: jnp.sum(losses.get(name)(pc, zero, zero, zero, 1.0))
  value, grad = jax.value_and_grad(fn)(big)
  assert np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(grad)))
  per = np.asarray(losses.get(name)(big, zero, zero, zero, 1.0))
  if name == "dpo":  # softplus(-h): ~0 for h >> 0, ~-h for h << 0 (no overflow to inf)
    np.testing.assert_allclose(per, [0.0, 1e4, 0.0, 3e4], rtol=1e-6, atol=1e-6)


def test_dpo_gradient_is_minus_beta_sigmoid():
  # d/dh softplus(-beta h) = -beta * sigmoid(-beta h)
  h = jnp.array([-3.0, 0.0, 2.0])
  beta = 0.5
  g = jax.grad(lambda x: jnp.sum(losses.dpo(x, 0 * x, 0 * x, 0 * x, beta)))(h)
  np.testing.assert_allclose(g, -beta / (1 + np.exp(beta * np.asarray(h))), rtol=1e-6)


def test_ipo_minimum_at_half_over_beta():
  beta = 0.1
  hs = jnp.linspace(0, 10, 1001)
  vals = losses.ipo(hs, 0 * hs, 0 * hs, 0 * hs, beta)
  assert abs(float(hs[jnp.argmin(vals)]) - 1 / (2 * beta)) < 1e-2


def test_sequence_logps_sum_and_mean():
  tok = jnp.array([[-1.0, -2.0, -3.0], [-0.5, -0.5, 9.0]])
  mask = jnp.array([[1, 1, 1], [1, 1, 0]])
  np.testing.assert_allclose(losses.sequence_logps(tok, mask), [-6.0, -1.0])
  np.testing.assert_allclose(losses.sequence_logps(tok, mask, "mean"), [-2.0, -0.5])
  with pytest.raises(ValueError, match="reduction"):
    losses.sequence_logps(tok, mask, "max")


def test_bradley_terry_reward_model_loss_is_its_formula():
  from alignment.data import batches as B  # pylint: disable=g-import-not-at-top
  from alignment.models import heads, zoo  # pylint: disable=g-import-not-at-top
  from alignment.train import steps  # pylint: disable=g-import-not-at-top
  model = heads.RewardModel(zoo.get("t5-nano", vocab_size=64))
  rng = np.random.default_rng(3)
  tok = lambda n: rng.integers(2, 64, (4, n)).astype(np.int32)
  pairs = B.PreferenceBatch(tok(5), np.ones((4, 5), np.int32), tok(6), np.ones((4, 6), np.int32),
                            tok(6), np.ones((4, 6), np.int32))
  params = model.init(jax.random.PRNGKey(0), pairs.prompt, pairs.prompt_mask, pairs.chosen,
                      pairs.chosen_mask)["params"]
  params = jax.tree.map(lambda p: p * 30.0, params)  # margins far from 0
  r = lambda y: np.asarray(model.apply({"params": params}, pairs.prompt, pairs.prompt_mask, y,
                                       np.ones_like(y)), np.float64)
  margin = r(pairs.chosen) - r(pairs.rejected)
  want = np.mean([-math.log(1.0 / (1.0 + math.exp(-m))) for m in margin])
  loss, metrics = steps.reward_model_loss_fn(model)(params, pairs, None)
  np.testing.assert_allclose(float(loss), want, rtol=1e-4)
  assert float(metrics["accuracy"]) == np.mean(margin > 0)
