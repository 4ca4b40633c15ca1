"""Orbax checkpoints: save, restore (also onto another mesh), continue == uninterrupted."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from alignment import checkpoint, sharding
from alignment import config as config_lib
from alignment.models import heads, zoo
from alignment.train import state as state_lib

V, B, LP, LR = 64, 8, 5, 4


def _batches(n):
  rng = np.random.default_rng(0)
  out = []
  for _ in range(n):
    out.append(dict(prompt=rng.integers(2, V, (B, LP)).astype(np.int32),
                    prompt_mask=np.ones((B, LP), np.int32),
                    response=rng.integers(2, V, (B, LR)).astype(np.int32),
                    response_mask=np.ones((B, LR), np.int32)))
  return out


def _setup(mesh_shape, devices):
  cfg = zoo.get("t5-nano", vocab_size=V)
  model = heads.LanguageModel(cfg)
  mesh = sharding.make_mesh(mesh_shape, devices)
  rules = sharding.DEFAULT_RULES
  opt_cfg = config_lib.optimizer_section(learning_rate=1e-2, weight_decay=0.01, b2=0.99)
  dummy = _batches(1)[0]
  init = lambda k: model.init(k, dummy["prompt"], dummy["prompt_mask"], dummy["response"],
                              dummy["response_mask"])["params"]
  state, shardings = state_lib.create(init, state_lib.make_optimizer(opt_cfg), mesh, rules,
                                      seed=1)

  def loss_fn(params, b, rng):
    logits = model.apply({"params": params}, b["prompt"], b["prompt_mask"], b["response"],
                         b["response_mask"])
    # The rng enters the loss so a wrongly restored key would change the result.
    noise = 1e-3 * jax.random.normal(rng, ())
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, b["response"])
    return jnp.mean(ce) + noise, {}

  bs = sharding.batch_sharding(mesh, rules)
  step = state_lib.make_step(loss_fn, opt_cfg, shardings, {k: bs for k in dummy}, mesh, rules)
  return state, shardings, step


def _params(state):
  return jax.tree.map(np.asarray, jax.device_get(state.params))


@pytest.mark.slow  # 30-40 s a case on 2 busy cores: 12 steps on 3 set-ups, a save, a restore
@pytest.mark.parametrize("restore_mesh", [{"data": 2, "fsdp": 2, "tensor": 2},
                                          {"data": 1, "fsdp": 4, "tensor": 2}])
def test_resume_equals_uninterrupted(tmp_path, restore_mesh):
  batches = _batches(6)
  mesh = {"data": 2, "fsdp": 2, "tensor": 2}
  state, _, step = _setup(mesh, jax.devices())
  for b in batches:
    state, _ = step(state, b)
  want = _params(state)

  state, _, step = _setup(mesh, jax.devices())
  ckpt = checkpoint.Checkpointer(str(tmp_path / "ckpt"), keep=2, async_save=True)
  for i, b in enumerate(batches[:3]):
    state, _ = step(state, b)
    ckpt.save(i + 1, state, data_state={"next_index": i + 1}, meta={"model": "t5-nano"})
  ckpt.wait()
  assert ckpt.all_steps() == [2, 3]  # keep-N
  del state

  state2, shardings2, step2 = _setup(restore_mesh, jax.devices())
  target = sharding.abstract_with_shardings(checkpoint.abstract_like(state2), shardings2)
  restored, data_state, meta = ckpt.restore(target)
  ckpt.close()
  assert data_state == {"next_index": 3} and meta["model"] == "t5-nano"
  assert meta["checksum"] == checkpoint.tree_checksum(restored)
  assert int(restored.step) == 3
  leaf = jax.tree.leaves(restored.params)[0]
  assert leaf.sharding == jax.tree.leaves(shardings2.params)[0]
  for b in batches[data_state["next_index"]:]:
    restored, _ = step2(restored, b)
  got = _params(restored)
  for (path, w), g in zip(jax.tree_util.tree_leaves_with_path(want), jax.tree.leaves(got)):
    if restore_mesh == mesh:  # same mesh: bitwise
      np.testing.assert_array_equal(g, w, err_msg=jax.tree_util.keystr(path))
    else:  # another mesh reduces in another order
      np.testing.assert_allclose(g, w, atol=1e-5, rtol=1e-5, err_msg=jax.tree_util.keystr(path))


def test_restore_without_checkpoint_is_a_clear_error(tmp_path):
  ckpt = checkpoint.Checkpointer(str(tmp_path / "empty"))
  with pytest.raises(checkpoint.CheckpointError, match="no checkpoint"):
    ckpt.restore({})


def test_a_state_from_an_export_is_the_random_one_with_its_parameters(tmp_path):
  """restore_or_create from an export of every parameter (the alignment loops) skips
  the random initialisation: its state is, bit for bit, the random one with the
  export's parameters put in (optimiser moments, counts, step and key included)."""
  cfg = zoo.get("t5-nano", vocab_size=V)
  model = heads.LanguageModel(cfg)
  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2}, jax.devices())
  rules = sharding.DEFAULT_RULES
  opt = state_lib.make_optimizer(ml_collections.ConfigDict(dict(
      learning_rate=1e-2, schedule="cosine", warmup_steps=2, decay_steps=10,
      weight_decay=0.01, grad_clip=1.0, b1=0.9, b2=0.99, eps=1e-8)))
  init = heads.init_fn(model, LP, LR)
  exported, _ = state_lib.create(init, opt, mesh, rules, seed=7)  # other parameters
  checkpoint.export_params(exported.params, cfg, str(tmp_path / "export"))
  random, _ = state_lib.create(init, opt, mesh, rules, seed=1)
  want = random.replace(params=exported.params)
  got, _, start = state_lib.restore_or_create(
      checkpoint.Checkpointer(str(tmp_path / "ckpt")), init, opt, mesh, rules, 1,
      {"model": "t5-nano"}, init_params_from=str(tmp_path / "export"))
  assert start == 0
  want_leaves = jax.tree_util.tree_leaves_with_path(want)
  got_leaves = jax.tree.leaves(got)
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for (path, w), g in zip(want_leaves, got_leaves):
    assert g.sharding == w.sharding, jax.tree_util.keystr(path)
    np.testing.assert_array_equal(np.asarray(g), np.asarray(w),
                                  err_msg=jax.tree_util.keystr(path))


def test_one_process_writes_each_replicated_array_whole(tmp_path):
  """In one process orbax's replica-parallel save (a slice of each replicated array
  per device, for the hosts of a pod slice to share) is off: each array is written
  whole by one replica, and reads back bit for bit, replicated or sharded."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
  rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  tree = {"w": jax.device_put(jnp.arange(64 * 48, dtype=jnp.float32).reshape(64, 48), rep),
          "s": jax.device_put(jnp.arange(64, dtype=jnp.int32) * 7, split)}
  ckpt = checkpoint.Checkpointer(str(tmp_path / "ck"))
  handler = ocp.type_handlers.get_type_handler(jax.Array)
  assert handler._use_replica_parallel is False  # pylint: disable=protected-access
  ckpt.save(3, tree)
  ckpt.wait()
  got, _, _ = ckpt.restore(checkpoint.abstract_like(tree))
  for k in tree:
    assert got[k].sharding == tree[k].sharding
    np.testing.assert_array_equal(np.asarray(got[k]), np.asarray(tree[k]))


def test_parameters_read_again_come_from_memory_until_the_files_change(tmp_path,
                                                                       monkeypatch):
  """A study reads the same exports in every stage: read again, the parameters are
  not read from disk again, each caller gets its own arrays (a train step donates
  them), and an export written again at the same path is read again."""
  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2}, jax.devices())
  rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  cfg = zoo.get("t5-nano", vocab_size=V)
  path = str(tmp_path / "export")
  first = {"w": jnp.arange(12, dtype=jnp.float32).reshape(3, 4), "b": jnp.ones((4,))}
  checkpoint.export_params(first, cfg, path)
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep), first)
  reads = []
  real = checkpoint._read_params  # pylint: disable=protected-access
  monkeypatch.setattr(checkpoint, "_read_params", lambda *a: reads.append(a) or real(*a))
  a = checkpoint.load_params(path, target)
  a["w"].delete()  # donated by a step
  b = checkpoint.load_params(path, target)
  assert len(reads) == 1 and b["w"].sharding == rep
  np.testing.assert_array_equal(np.asarray(b["w"]), np.asarray(first["w"]))
  checkpoint.export_params(jax.tree.map(lambda x: x + 1, first), cfg, path)
  c = checkpoint.load_params(path, target)
  assert len(reads) == 2
  np.testing.assert_array_equal(np.asarray(c["w"]), np.asarray(first["w"]) + 1)
