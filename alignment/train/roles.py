"""The four roles, their meshes and the frozen reference policy.

- `Role`: the four models of a study, each named (here, not in `judges`, so
  that the roles' meshes need nothing of the judges).
- `role_meshes`: {Role: mesh}, each role's own sub-mesh (`config.roles`) or the
  shared mesh.
- `Reference`: the reference policy's parameters and how the train step gets
  what it needs of them (a `steps.AlignmentInput`): the parameters themselves on
  a shared mesh, or the pairs' log-probs scored on the reference's own mesh;
  `alignment_input_spec` is that input's abstract shape, for building the step.
- `load_reference`: `init.reference`, else `init.policy`, else the policy's own
  initial parameters.
"""
from __future__ import annotations

import enum

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from alignment import checkpoint, distributed, sharding
from alignment import config as config_lib
from alignment.models import heads, zoo
from alignment.train import steps


class Role(enum.Enum):
  """The four models of a study (docs/paper.md, "The set-up")."""
  POLICY = "policy"
  REFERENCE = "reference"
  PROXY_PM = "proxy_pm"
  GOLDEN = "golden"


def policy_set_up(config):
  """(meshes, policy mesh, rules, reference_shared) of an alignment loop: the
  host set up, each role's mesh (config.roles), and whether the reference
  shares the policy's mesh (its parameters go into the step) or not."""
  distributed.setup_host()
  shared_mesh, rules = sharding.mesh_and_rules(config.mesh)
  meshes = role_meshes(config, shared_mesh)
  mesh = meshes[Role.POLICY]
  return meshes, mesh, rules, sharding.same_mesh(mesh, meshes[Role.REFERENCE])


def role_meshes(config, mesh):
  """{Role: mesh}: each role's own sub-mesh (config.roles) or the shared `mesh`."""
  roles = config.get("roles", None)
  if roles is None:
    return {role: mesh for role in Role}
  try:
    return {role: sharding.role_mesh(roles[role.value], mesh, where=f"config.roles.{role.value}")
            for role in Role}
  except sharding.MeshError as e:
    raise config_lib.ConfigError(str(e)) from None


class Reference:
  """The frozen reference policy, on the policy's mesh or on its own (config.roles).

  Shared mesh (the default): its parameters go into the train step, which
  scores the pairs with them in the same program. Own mesh: the pairs are
  resharded onto it, scored there, and only the log-probs ([B] each) are
  resharded back into the step. `on_policy_mesh()` is a reshard of the
  weights themselves (jax.device_put), for what needs them beside the policy
  (evaluation's KL, mixture sampling).
  """

  def __init__(self, model, policy_mesh, mesh, rules, policy_param_shardings, init_cfg,
               data_cfg, seed: int, reduction: str = "sum"):
    self.policy_mesh, self.mesh, self.rules = policy_mesh, mesh, rules
    self.shared = sharding.same_mesh(policy_mesh, mesh)
    self.policy_param_shardings = policy_param_shardings
    self.params = load_reference(init_cfg, data_cfg, seed, model, mesh, rules)
    self.export = init_cfg.reference or init_cfg.policy  # "": the policy's own init
    self._copy = self.params if self.shared else None
    rows = sharding.batch_sharding(mesh, rules, 1)
    self._logps = jax.jit(lambda p, pairs: steps.pair_logps(model, p, pairs, reduction),
                          out_shardings=(rows, rows))

  def step_inputs(self, pairs) -> steps.AlignmentInput:
    """The train step's input for these pairs: with the reference's parameters
    (shared mesh) or the log-probs it gave them on its own mesh."""
    if self.shared:
      return steps.AlignmentInput(pairs, ref_params=self.params)
    with sharding.use(self.mesh, self.rules):
      logps = self._logps(self.params, sharding.move_rows(pairs, self.mesh, self.rules))
    return steps.AlignmentInput(pairs,
                                ref_logps=sharding.move_rows(logps, self.policy_mesh, self.rules))

  def on_policy_mesh(self):
    if self._copy is None:
      self._copy = jax.device_put(self.params, self.policy_param_shardings)
    return self._copy


def alignment_input_spec(pairs_spec, abstract_params, shared: bool, policy_mesh,
                         rules) -> steps.AlignmentInput:
  """The abstract `AlignmentInput` of a step whose reference shares the policy's mesh
  (its parameters go in) or has its own (its log-probs [B] come in, batch-sharded)."""
  if shared:
    return steps.AlignmentInput(pairs_spec, ref_params=abstract_params)
  rows = sharding.batch_sharding(policy_mesh, rules, 1)
  logp = jax.ShapeDtypeStruct((pairs_spec.prompt.shape[0],), jnp.float32, sharding=rows)
  return steps.AlignmentInput(pairs_spec, ref_logps=(logp, logp))


def load_reference(init_cfg, data_cfg, seed: int, model, mesh, rules):
  """The frozen reference policy's parameters, sharded like the policy's.

  `init.reference` if set, else `init.policy` (the SFT export the policy
  starts from), else the policy's own initial parameters (the same `seed`).
  """
  path = init_cfg.reference or init_cfg.policy
  target = zoo.sharded_abstract_params(model, data_cfg, mesh, rules)
  if path:
    return checkpoint.load_params(path, target)
  init = heads.init_fn(model, data_cfg.prompt_len, data_cfg.response_len)
  key = jax.random.split(jax.random.PRNGKey(np.uint32(seed)))[0]
  shardings = jax.tree.map(lambda x: x.sharding, target)
  with sharding.use(mesh, rules):
    return jax.jit(lambda k: nn.unbox(init(k)), out_shardings=shardings)(key)
