"""A (2 data x 2 fsdp x 2 tensor) mesh computes what one device computes."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alignment import sharding
from alignment.models import heads, zoo
from alignment.train import state as state_lib

B, LP, LR, V = 8, 6, 5, 64


def _batch(seed):
  rng = np.random.default_rng(seed)
  def ragged(l, left):
    n = rng.integers(1, l + 1, size=B)
    idx = np.arange(l)[None]
    mask = (idx >= l - n[:, None]) if left else (idx < n[:, None])
    return np.where(mask, rng.integers(2, V, size=(B, l)), 0).astype(np.int32), mask.astype(np.int32)
  p, pm = ragged(LP, True)
  r1, m1 = ragged(LR, False)
  r2, m2 = ragged(LR, False)
  label = rng.integers(0, 2, size=B).astype(np.float32)
  return dict(prompt=p, prompt_mask=pm, y1=r1, m1=m1, y2=r2, m2=m2, label=label)


def _loss_fn(model, head):
  def loss(params, b, rng):
    del rng
    if head == "lm":
      logits = model.apply({"params": params}, b["prompt"], b["prompt_mask"], b["y1"], b["m1"])
      ce = optax.softmax_cross_entropy_with_integer_labels(logits, b["y1"])
      return jnp.sum(ce * b["m1"]) / jnp.sum(b["m1"]), {}
    if head == "pairwise":
      z = model.apply({"params": params}, b["prompt"], b["prompt_mask"], b["y1"], b["m1"],
                      b["y2"], b["m2"])
      return jnp.mean(optax.sigmoid_binary_cross_entropy(z, b["label"])), {}
    r = model.apply({"params": params}, b["prompt"], b["prompt_mask"], b["y1"], b["m1"])
    return jnp.mean((r - b["label"]) ** 2), {}
  return loss


def _loss_and_grads(cfg, head, mesh_shape, devices):
  mesh = sharding.make_mesh(mesh_shape, devices)
  rules = sharding.DEFAULT_RULES
  model = heads.make_model(cfg, head)
  batch = _batch(0)
  args = (batch["prompt"], batch["prompt_mask"], batch["y1"], batch["m1"])
  if head == "pairwise":
    args += (batch["y2"], batch["m2"])
  # Perturb the zero-ish score head so the backbone gets gradients of size.
  init = lambda k: model.init(k, *args)["params"]
  params, shardings = sharding.create_sharded(init, mesh, rules, jax.random.PRNGKey(3))
  bs = sharding.batch_sharding(mesh, rules)
  batch_sh = {k: (bs if v.ndim == 2 else sharding.batch_sharding(mesh, rules, 1))
              for k, v in batch.items()}
  fn = jax.jit(lambda p, b: state_lib.grads_and_metrics(_loss_fn(model, head), p, b, None),
               in_shardings=(shardings, batch_sh), out_shardings=(shardings, None))
  with sharding.use(mesh, rules):
    grads, metrics = fn(params, batch)
  n_sharded = sum(1 for s in jax.tree.leaves(shardings) if not s.is_fully_replicated)
  return float(metrics["loss"]), jax.device_get(grads), n_sharded


@pytest.mark.slow  # 30-50 s a case on 2 busy cores: loss and grads on 1 and on 8 devices
@pytest.mark.parametrize("model_name", ["t5-nano", "llama-tiny"])
@pytest.mark.parametrize("head", ["lm", "pairwise", "reward"])
def test_sharded_equals_single_device(model_name, head):
  cfg = zoo.get(model_name, vocab_size=V)
  one_loss, one_grads, _ = _loss_and_grads(cfg, head, {"data": 1}, jax.devices()[:1])
  loss, grads, n_sharded = _loss_and_grads(cfg, head, {"data": 2, "fsdp": 2, "tensor": 2},
                                           jax.devices())
  assert n_sharded > 0  # the 8-device run really splits parameters
  assert abs(loss - one_loss) <= 1e-5 * max(1.0, abs(one_loss))
  flat_one = jax.tree_util.tree_leaves_with_path(one_grads)
  flat = dict(jax.tree_util.tree_leaves_with_path(grads))
  total = sum(float(np.abs(g).sum()) for _, g in flat_one)
  assert total > 0
  for path, g in flat_one:
    np.testing.assert_allclose(flat[path], g, atol=1e-5, rtol=1e-4,
                               err_msg=jax.tree_util.keystr(path))


def test_mesh_shape_errors():
  with pytest.raises(sharding.MeshError, match="needs 12 devices"):
    sharding.resolve_mesh_shape({"data": 3, "fsdp": 2, "tensor": 2}, 8)
  with pytest.raises(sharding.MeshError, match="unknown axes"):
    sharding.resolve_mesh_shape({"model": 2}, 8)
  assert sharding.resolve_mesh_shape({"data": -1, "tensor": 2}, 8) == {
      "data": 4, "fsdp": 1, "tensor": 2}
