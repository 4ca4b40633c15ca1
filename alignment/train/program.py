"""A loop's train step as one program: what the loop runs, `alignment.aot`
compiles and `alignment.bench` times.

Each loop module (`sft`, `preference_model`, `offline`, `online`) has a
`build(config, mesh, rules, vocab_size, ...) -> Program` that makes, from its
config sections alone and without allocating anything:

  model, optimizer, init   the network, AdamW + schedule, rng -> boxed params
  state_shardings          where each leaf of the TrainState lives
  abstract_state           ShapeDtypeStructs (with shardings) of the TrainState
  batch_spec               ShapeDtypeStructs (with shardings) of the step's input
  step                     `state.make_step(...)`: step(state, batch[, accept])

The loop then restores or creates the state (`Program.restore_or_create`) and
calls `program.step`; the AOT check lowers `program.lower()`, the very same
jitted function with the same static arguments (tests/test_aot.py shows it).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from alignment import sharding
from alignment.data import batches as B
from alignment.models import heads
from alignment.train import state as state_lib


@dataclasses.dataclass(frozen=True)
class Program:
  """One loop's compiled step and everything needed to feed it (module docstring)."""
  name: str
  model: Any
  model_config: Any
  optimizer: optax.GradientTransformation
  init: Callable[[jax.Array], Any]
  mesh: Any
  rules: Any
  state_shardings: Any
  abstract_state: Any
  batch_spec: Any
  step: Callable[..., Any]
  accepts_veto: bool = False  # step(state, batch, accept): accept=False refuses the update

  @property
  def batch_shardings(self):
    return jax.tree.map(lambda x: x.sharding, self.batch_spec)

  def lower(self):
    """The step lowered on abstract inputs (nothing allocated): `.compile()` it."""
    args = (self.abstract_state, self.batch_spec)
    if self.accepts_veto:
      args += (jax.ShapeDtypeStruct((), jnp.bool_, sharding=sharding.replicated(self.mesh)),)
    with sharding.use(self.mesh, self.rules):
      return self.step.jitted.lower(*args)

  def restore_or_create(self, ckpt, seed: int, meta: dict, data_iter=None,
                        init_params_from: str = "", init_keys=None):
    """(state, start step): the newest checkpoint, else fresh (`state.restore_or_create`)."""
    state, shardings, start = state_lib.restore_or_create(
        ckpt, self.init, self.optimizer, self.mesh, self.rules, seed, meta, data_iter,
        init_params_from, init_keys)
    del shardings  # the same as self.state_shardings
    return state, start


def batch_spec(batch_cls, batch_size: int, lengths: tuple[int, ...], mesh, rules):
  """A typed batch of int32 ShapeDtypeStructs [batch_size, length], batch-sharded."""
  rows = sharding.batch_sharding(mesh, rules, 2)
  return batch_cls(*(jax.ShapeDtypeStruct((batch_size, n), jnp.int32, sharding=rows)
                     for n in lengths))


def sft_batch_spec(d, mesh, rules) -> B.SFTBatch:
  """The SFTBatch of the `data` section d."""
  return batch_spec(B.SFTBatch, d.batch_size, (d.prompt_len, d.prompt_len, d.response_len,
                                               d.response_len), mesh, rules)


def pair_batch_spec(d, mesh, rules) -> B.PreferenceBatch:
  """The PreferenceBatch of the `data` section d."""
  return batch_spec(B.PreferenceBatch, d.batch_size,
                    (d.prompt_len, d.prompt_len) + (d.response_len,) * 4, mesh, rules)


def build(name: str, model, model_config, optimizer_cfg, data_cfg, mesh, rules,
          loss_fn_of: Callable[[Any], Callable], batch_spec_of: Callable[[Any], Any],
          accepts_veto: bool = False, watch=("loss", "grad_norm")) -> Program:
  """The Program of a loop: abstract state, shardings and the jitted step.

  loss_fn_of(model) -> loss_fn(params, batch, rng); batch_spec_of(abstract_state)
  -> the step's abstract input (it may hold the parameters' shapes, e.g. the
  frozen reference's).
  """
  optimizer = state_lib.make_optimizer(optimizer_cfg)
  init = heads.init_fn(model, data_cfg.prompt_len, data_cfg.response_len)
  abstract_state, state_shardings = state_lib.abstract(init, optimizer, mesh, rules, 0)
  spec = batch_spec_of(abstract_state)
  step = state_lib.make_step(loss_fn_of(model), optimizer, state_shardings,
                             jax.tree.map(lambda x: x.sharding, spec), mesh, rules,
                             watch=watch, accepts_veto=accepts_veto)
  return Program(name, model, model_config, optimizer, init, mesh, rules, state_shardings,
                 abstract_state, spec, step, accepts_veto)


def zeros_like_spec(spec):
  """Host zeros shaped like a batch spec (for tests and benchmarks)."""
  return jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), spec)
