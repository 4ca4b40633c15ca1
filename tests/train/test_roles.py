"""Roles on meshes: the online loop with policy, reference and proxy PM on one
shared 8-device mesh, and with each on its own sub-mesh, gives the same run.

On sub-meshes the reference scores the pairs on its own devices and the proxy
PM judges on its own; pairs, verdicts and log-probs cross by reshards, and
the reference's weights are resharded onto the policy's mesh for mixture
sampling (and evaluation). Sums over 8 vs 4 devices round differently, hence
the float tolerances; the sampled tokens and verdicts must be identical.
"""
import os

import jax
import numpy as np
import pytest

from alignment import checkpoint, judges
from alignment import config as config_lib
from alignment import main as main_lib
from alignment import sharding
from alignment.data import tasks
from alignment.data import vocab as vocab_lib
from alignment.models import heads, zoo
from alignment.train import bookkeeping, roles

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _config(**overrides):
  c = config_lib.load(os.path.join(ROOT, "configs", "online.py:tiny"))
  config_lib.apply_overrides(c, [f"{k}={v!r}" for k, v in overrides.items()])
  return c


@pytest.fixture(scope="module")
def pm_export(tmp_path_factory):
  """A randomly initialised proxy PM, exported like a trained one."""
  c = _config()
  vocab = tasks.task_vocabulary(c.data.task)
  cfg = zoo.from_section(c.model, vocab_lib.model_vocab_size(vocab))
  model = heads.PairwisePreferenceModel(cfg)
  p = np.zeros((1, c.data.prompt_len), np.int32)
  r = np.zeros((1, c.data.response_len), np.int32)
  params = jax.jit(lambda k: model.init(k, p, p, r, r, r, r)["params"])(jax.random.PRNGKey(3))
  import flax.linen as nn
  out = str(tmp_path_factory.mktemp("pm") / "export")
  checkpoint.export_params(nn.unbox(params), cfg, out)
  return out


SPLIT = {"roles.policy.devices": "0:4", "roles.reference.devices": "4:6",
         "roles.proxy_pm.devices": "6:8"}


@pytest.mark.e2e
@pytest.mark.slow
def test_online_on_role_sub_meshes_equals_the_shared_mesh(pm_export, tmp_path):
  common_overrides = {"judge.checkpoint": pm_export, "train.num_steps": 4,
                      "train.checkpoint_every": 4, "train.log_every": 1,
                      "sampling.mixture": 0.5}
  main_lib.run(_config(**common_overrides), str(tmp_path / "shared"))
  main_lib.run(_config(**common_overrides, **SPLIT), str(tmp_path / "split"))
  a, b = (bookkeeping.read_metrics(str(tmp_path / d)) for d in ("shared", "split"))
  assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 3, 4]
  for ra, rb in zip(a, b):
    for k in ra:
      # At step 1 the policy IS the reference: every margin is 0 up to the rounding of
      # log-probs computed on another mesh, so the sign count is not comparable there.
      if k == "reward_accuracy" and ra["step"] == 1:
        assert abs(ra["margin"]) < 1e-4 and abs(rb["margin"]) < 1e-4
        continue
      if "time" not in k and "per_s" not in k:
        np.testing.assert_allclose(rb[k], ra[k], rtol=1e-4, atol=1e-4, err_msg=k)
  from alignment.data import stream
  sa, sb = (stream.read_stream(str(tmp_path / d / "stream")) for d in ("shared", "split"))
  for k in ("response_1", "response_2", "verdict"):
    np.testing.assert_array_equal(sa[k], sb[k])
  mesh = sharding.make_mesh({"data": 8})
  (_, pa), (_, pb) = (zoo.load_export(str(tmp_path / d / "export"), "lm", _config().data,
                                      mesh, sharding.DEFAULT_RULES)
                      for d in ("shared", "split"))
  for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)):
    np.testing.assert_allclose(np.asarray(y), np.asarray(x), atol=1e-5)


def test_role_meshes_are_slices_of_the_devices():
  c = _config(**SPLIT)
  shared, _ = sharding.mesh_and_rules(c.mesh)
  meshes = roles.role_meshes(c, shared)
  assert [d.id for d in meshes[roles.Role.POLICY].devices.flat] == [0, 1, 2, 3]
  assert [d.id for d in meshes[roles.Role.REFERENCE].devices.flat] == [4, 5]
  assert [d.id for d in meshes[roles.Role.PROXY_PM].devices.flat] == [6, 7]
  assert meshes[roles.Role.GOLDEN] is shared


@pytest.mark.parametrize("override,message", [
    ({"roles.reference.devices": "6:10"}, "config.roles.reference.devices='6:10': needs 0 <= "
                                          "first < end <= 8"),
    ({"roles.reference.devices": "x"}, "expected 'first:end'"),
    ({"roles.proxy_pm.devices": "0:3"}, "not divisible by the data-parallel size 3 of "
                                        "config.roles.proxy_pm"),
    ({"roles.golden.devices": "0:2"}, "the golden judge here is the environment's program"),
    ({"roles.policy.devices": "0:4", "roles.policy.data": 3}, "config.roles.policy"),
])
def test_bad_roles_are_one_clear_config_error(override, message, tmp_path):
  with pytest.raises(config_lib.ConfigError, match=message.replace("(", r"\(").replace(
      ")", r"\)").replace("[", r"\[")):
    main_lib.run(_config(**override), str(tmp_path))


@pytest.mark.slow
def test_policy_gradient_rewards_from_a_judge_on_its_own_mesh(pm_export):
  """RLOO's rewards from a pairwise PM (sibling wins) on the proxy's own devices equal
  those of the same judge on the policy's mesh (a reward model's take the same
  reshards, without the split into siblings)."""
  from alignment.data import batches  # pylint: disable=g-import-not-at-top
  from alignment.train import online  # pylint: disable=g-import-not-at-top
  from alignment.train import state as state_lib  # pylint: disable=g-import-not-at-top
  c = _config(**{"rl.method": "rloo", "rl.samples": 3, "train.write_stream": False,
                 "judge.kind": "proxy", "judge.checkpoint": pm_export}, **SPLIT)
  meshes, mesh, rules, shared = roles.policy_set_up(c)
  vocab = tasks.task_vocabulary(c.data.task)
  program = online.build(c, mesh, rules, vocab, reference_shared=shared)
  state, _ = state_lib.create(program.train.init, program.train.optimizer, mesh, rules, 0)
  rng = np.random.default_rng(0)
  prompt = rng.integers(2, 50, size=(c.data.batch_size, c.data.prompt_len)).astype(np.int32)
  prompts = sharding.move_rows(batches.PromptBatch(prompt, np.ones_like(prompt)), mesh, rules)
  out = program.sampler(state.params, prompts, jax.random.PRNGKey(0))
  rewards = {}
  for where, role_meshes in (("own", meshes), ("shared", {role: mesh for role in meshes})):
    judge = judges.build(c.judge, c.data, vocab, role_meshes[roles.Role.PROXY_PM], rules)
    assert sharding.same_mesh(judge.mesh, mesh) == (where == "shared")
    rewards[where] = online.make_phases(program, c, judge, None).judge(None, out, 0).rewards
    assert rewards[where].sharding.mesh.devices.tolist() == mesh.devices.tolist()
  np.testing.assert_allclose(rewards["own"], rewards["shared"], rtol=1e-5, atol=1e-6)
  assert np.asarray(rewards["own"]).shape == (c.data.batch_size * 3,)
  # Mean P(beating a sibling): 1/2 over each prompt's samples.
  np.testing.assert_allclose(np.asarray(rewards["own"]).reshape(-1, 3).mean(1), 0.5, atol=1e-5)


def test_an_evaluator_takes_the_loaded_sft_policy_as_its_reference(tmp_path, monkeypatch):
  """eval.reference naming the export the SFT parameters were loaded from (a study's
  runs) is not loaded again; the evaluator measures exactly what it measures when it
  loads it (another export path is loaded)."""
  from alignment import evaluation  # pylint: disable=g-import-not-at-top
  config = config_lib.load(os.path.join(ROOT, "configs", "eval.py:tiny"))
  vocab = tasks.task_vocabulary(config.data.task)
  cfg = zoo.from_section(config.model, vocab_lib.model_vocab_size(vocab))
  model = heads.LanguageModel(cfg)
  mesh, rules = sharding.mesh_and_rules(config.mesh)
  init = heads.init_fn(model, config.data.prompt_len, config.data.response_len)
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  sft = str(tmp_path / "sft")
  checkpoint.export_params(nn.unbox(jax.jit(init)(jax.random.PRNGKey(2))), cfg, sft)
  model, params = zoo.load_export(sft, "lm", config.data, mesh, rules)
  config_lib.apply_overrides(config, [f"eval.reference={sft!r}"])
  loaded = []
  load_export = zoo.load_export
  monkeypatch.setattr(zoo, "load_export",
                      lambda path, *a: loaded.append(path) or load_export(path, *a))
  shared = evaluation.build_evaluator(config.eval, config.data, model, params, mesh, rules,
                                      sft_export=sft)
  assert loaded == []
  elsewhere = evaluation.build_evaluator(config.eval, config.data, model, params, mesh, rules,
                                         sft_export=str(tmp_path / "other"))
  assert loaded == [sft]
  (m1, a1), (m2, a2) = shared.evaluate(params), elsewhere.evaluate(params)
  assert m1 == m2 and a1.keys() == a2.keys()
  for k in a1:
    np.testing.assert_array_equal(a1[k], a2[k], err_msg=k)
