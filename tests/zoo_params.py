"""Random parameters for a zoo model, drawn in numpy: nothing to compile, the same
for a seed on every machine. Shared by the tests that export or sample a model whose
weights do not matter."""
import flax.linen as nn
import jax
import numpy as np

from alignment.models import zoo


def random_params(cfg, seed, divisor=None):
  """Standard normal draws for each of `cfg`'s parameters divided by `divisor`, or by
  the square root of the fan-in (the product of all but the last dimension) when it
  is None."""
  rng = np.random.default_rng(seed)

  def draw(x):
    d = np.sqrt(np.prod(x.shape[:-1])) if divisor is None else divisor
    return (rng.normal(size=x.shape) / d).astype(np.float32)

  return jax.tree.map(draw, nn.unbox(zoo.abstract_params(cfg)))
