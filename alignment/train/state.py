"""Train state, optimiser, and a generic sharded, donated train step.

The state is a pytree (`TrainState`): step, params, optimiser state and the
PRNG key the step consumes. `create` builds it directly sharded; `make_step`
wraps a pure loss function into a `jax.jit` step (`Step`) with explicit in/out
shardings, the state donated and the learning rate an input. Gradient
computation (`grads_and_metrics`) is kept apart from applying it
(`apply_grads`), so loops can inspect, accumulate or skip gradients (e.g. on a
NaN) between the two.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Optional

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from alignment import checkpoint, faults, sharding

log = logging.getLogger("alignment")

Array = jax.Array


@flax.struct.dataclass
class TrainState:
  step: Array
  params: Any
  opt_state: Any
  rng: Array  # raw uint32 key data [2]: saved and restored with the state


def make_optimizer(cfg, learning_rate=None) -> optax.GradientTransformation:
  """AdamW with warm-up and an optional cosine/linear decay, and global-norm clipping.

  cfg: the `optimizer` section (learning_rate, warmup_steps, schedule, decay_steps,
  weight_decay, grad_clip, b1, b2, eps).
  learning_rate: in place of cfg.learning_rate, e.g. a traced float32 scalar (a train
  step's input, `make_step`). The schedule then computes the same float32 values from
  it: the peak rate enters each schedule once, negated or multiplied in float32 either
  way. tests/train/test_program.py compares the updates' bits under XLA's default CPU
  back end (the test session's cheaper codegen can differ in the last place).
  """
  lr = float(cfg.learning_rate) if learning_rate is None else learning_rate
  warm = int(cfg.warmup_steps)
  decay = int(cfg.get("decay_steps", 0) or 0)
  if cfg.schedule == "constant":
    after = optax.constant_schedule(lr)
  elif cfg.schedule == "cosine":
    after = optax.cosine_decay_schedule(lr, max(decay, 1))
  elif cfg.schedule == "linear":
    after = optax.linear_schedule(lr, 0.0, max(decay, 1))
  else:
    raise ValueError(f"config.optimizer.schedule={cfg.schedule!r}: use constant, cosine or linear")
  schedule = optax.join_schedules([optax.linear_schedule(0.0, lr, warm), after], [warm]) \
      if warm > 0 else after
  chain = []
  if cfg.grad_clip and cfg.grad_clip > 0:
    chain.append(optax.clip_by_global_norm(float(cfg.grad_clip)))
  chain.append(optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                           weight_decay=cfg.weight_decay))
  return optax.chain(*chain)


def initializer(model_init: Callable[[Array], Any], optimizer: optax.GradientTransformation):
  """seed -> TrainState (boxed params). model_init(rng) returns boxed params."""
  def init(seed_arr):
    key = jax.random.PRNGKey(seed_arr)
    init_key, train_key = jax.random.split(key)
    params = model_init(init_key)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=optimizer.init(params), rng=train_key)
  return init


def abstract(model_init, optimizer, mesh, rules, seed: int):
  """(abstract state with shardings, shardings): nothing allocated."""
  init = initializer(model_init, optimizer)
  with sharding.use(mesh, rules):
    # A ShapeDtypeStruct, not an array: nothing is dispatched, so this also works on
    # the abstract devices of a TPU topology (alignment.aot --topology).
    del seed
    boxed = jax.eval_shape(init, jax.ShapeDtypeStruct((), jnp.uint32))
  shardings = sharding.logical_shardings(boxed, mesh, rules)
  return sharding.abstract_with_shardings(sharding.strip_boxes(boxed), shardings), shardings


def create(model_init: Callable[[Array], Any], optimizer: optax.GradientTransformation,
           mesh, rules, seed: int):
  """TrainState born sharded. model_init(rng) returns boxed params.

  Returns (state, state_shardings).
  """
  return sharding.create_sharded(initializer(model_init, optimizer), mesh, rules,
                                 jnp.asarray(seed, jnp.uint32))


def grads_and_metrics(loss_fn, params, batch, rng):
  """(grads, metrics); loss_fn(params, batch, rng) -> (scalar loss, metrics dict)."""
  (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, rng)
  metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads))
  return grads, metrics


def apply_grads(state: TrainState, grads, optimizer) -> TrainState:
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                       opt_state=opt_state)


def all_finite(metrics, names) -> Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(metrics[n])) for n in names]))


@dataclasses.dataclass(frozen=True)
class Step:
  """A jitted train step at one learning rate: `step(state, batch[, accept])`.

  The rate is the program's input (a replicated float32 scalar), not a constant in it:
  `at(rate)` is the same compiled program at another rate, so the stages of a study
  that differ only in their rate (a rate search's pilots, a grid over rates) trace,
  compile and load one step between them (`program.build` shares it).
  """
  jitted: Any
  mesh: Any
  rules: Any
  learning_rate: float

  def __call__(self, state, batch, *accept):
    with sharding.use(self.mesh, self.rules):
      return self.jitted(state, batch, np.float32(self.learning_rate), *accept)

  def at(self, learning_rate: float) -> "Step":
    return dataclasses.replace(self, learning_rate=float(learning_rate))

  def lower(self, state, batch, *accept):
    """The program lowered on (abstract or concrete) inputs: `.compile()` it; the
    compiled program takes (state, batch, rate[, accept])."""
    rate = jax.ShapeDtypeStruct((), jnp.float32, sharding=sharding.replicated(self.mesh))
    with sharding.use(self.mesh, self.rules):
      return self.jitted.lower(state, batch, rate, *accept)


def make_step(loss_fn, optimizer_cfg, state_shardings, batch_shardings, mesh, rules,
              watch=("loss", "grad_norm"), accepts_veto: bool = False) -> Step:
  """The jitted step (`Step`) with explicit shardings; the state argument is donated.

  optimizer_cfg: the `optimizer` section; the step builds `make_optimizer` from it
  with the learning rate as its input, at optimizer_cfg.learning_rate until `at`.
  step(state, batch) -> (new_state, metrics); metrics are replicated scalars.
  The guard: if any watched metric is NaN/Inf, or (accepts_veto) the caller's
  `accept` flag is False - step(state, batch, accept), e.g. the online loop's
  "every verdict of the judge is finite" - the update is not applied (params
  and optimiser state stay as they were) and metrics["nonfinite"] is 1: the
  loop then stops (naming the step) or counts the skipped batch.
  """
  poisoned = faults.nan_steps("loss")  # fault injection (tests only)
  poisoned_grads = faults.nan_steps("grad")
  optimizer_cfg = ml_collections.FrozenConfigDict(optimizer_cfg)  # what it was when traced

  def step(state: TrainState, batch, learning_rate, accept=True):
    optimizer = make_optimizer(optimizer_cfg, learning_rate)
    rng, step_rng = jax.random.split(state.rng)
    fn = loss_fn
    if poisoned:
      def fn(params, b, r):
        loss, m = loss_fn(params, b, r)
        bad = jnp.isin(state.step + 1, jnp.asarray(poisoned))
        return loss * jnp.where(bad, jnp.nan, 1.0), m
    grads, metrics = grads_and_metrics(fn, state.params, batch, step_rng)
    if poisoned_grads:  # an Inf in the gradients while the loss stays finite
      bad = jnp.isin(state.step + 1, jnp.asarray(poisoned_grads))
      grads = jax.tree.map(lambda g: g * jnp.where(bad, jnp.inf, 1.0).astype(g.dtype), grads)
      metrics = dict(metrics, grad_norm=optax.tree.norm(grads))
    updated = apply_grads(state, grads, optimizer)
    ok = all_finite(metrics, [n for n in watch if n in metrics]) & accept
    keep = lambda new, old: jnp.where(ok, new, old)
    new_state = state.replace(
        step=state.step + 1, rng=rng,
        params=jax.tree.map(keep, updated.params, state.params),
        opt_state=jax.tree.map(keep, updated.opt_state, state.opt_state))
    metrics = dict(metrics, nonfinite=1.0 - ok.astype(jnp.float32))
    return new_state, metrics

  in_shardings = (state_shardings, batch_shardings, sharding.replicated(mesh))
  if accepts_veto:
    in_shardings += (sharding.replicated(mesh),)
  def unvetoed_step(state: TrainState, batch, learning_rate):
    return step(state, batch, learning_rate)

  jitted = jax.jit(step if accepts_veto else unvetoed_step, in_shardings=in_shardings,
                   out_shardings=(state_shardings, sharding.replicated(mesh)),
                   donate_argnums=(0,))
  return Step(jitted, mesh, rules, float(optimizer_cfg.learning_rate))


def unboxed_params(boxed):
  return nn.unbox(boxed)


def restore_or_create(ckpt, model_init, optimizer, mesh, rules, seed: int, meta: dict,
                      data_iter=None, init_params_from: str = "",
                      init_keys: Optional[tuple[str, ...]] = None, abstract_state=None):
  """The train state to start from: the newest checkpoint, else fresh.

  Resume order: (1) the newest complete checkpoint in `ckpt` (state, data
  iterator, RNG), after checking that its metadata matches `meta` (model name
  and vocabulary); (2) a fresh state whose parameters come from
  `init_params_from` (a params export or run directory), if given - only the
  top-level subtrees `init_keys` when given (a preference model takes the SFT
  policy's "backbone"); all of them (the alignment loops) skip the random
  initialisation (`with_params`); (3) a fresh random state.
  abstract_state: `abstract(model_init, optimizer, mesh, rules, ...)` when the caller
  has it already (a Program's), so the model's initialisation is not traced again.
  Returns (state, shardings, start_step).
  """
  target, shardings = abstract_state or abstract(model_init, optimizer, mesh, rules, seed)
  if ckpt.latest_step() is not None:
    try:
      saved_meta = ckpt.read_meta()
    except Exception:  # pylint: disable=broad-except  (unreadable: restore() falls back)
      saved_meta = {}
    for key, want in meta.items():
      if key in saved_meta and saved_meta[key] != want:
        raise checkpoint.CheckpointError(
            f"{ckpt.directory}: checkpoint was written with {key}={saved_meta[key]!r} but "
            f"the config asks for {want!r}; use a new --workdir or the matching config")
    state, data_state, _ = ckpt.restore(target)
    if data_iter is not None:
      data_iter.set_state(data_state)
    log.info("resumed from %s at step %d", ckpt.directory, int(state.step))
    return state, shardings, int(state.step)
  keys = (init_keys or tuple(target.params)) if init_params_from else ()
  if keys and set(keys) == set(target.params):  # every parameter from the export
    loaded = checkpoint.load_params(init_params_from, target.params)
    state = with_params(loaded, optimizer, mesh, rules, seed, shardings)
  else:
    state, shardings = create(model_init, optimizer, mesh, rules, seed)
    if keys:
      loaded = checkpoint.load_params(init_params_from, {k: target.params[k] for k in keys})
      state = state.replace(params={**state.params, **loaded})
  if keys:
    log.info("parameters %s initialised from %s", list(keys), init_params_from)
  return state, shardings, 0


def with_params(params, optimizer, mesh, rules, seed: int, shardings) -> TrainState:
  """The fresh TrainState `create` makes, its parameters replaced by `params`, without
  drawing (nor compiling) the random initialisation they replace: step 0, the
  optimiser's initial state (`make_optimizer`'s reads only the parameters' shapes:
  zero moments and counts) and the train key `initializer` splits from `seed`.

  Built op by op and placed on `shardings`: a jitted builder was traced and loaded
  again for every stage of a study (about 0.3 s each on a CPU, for a few hundred
  small dispatches' worth of work); the values are the same bits."""
  with sharding.use(mesh, rules):
    _, train_key = jax.random.split(jax.random.PRNGKey(jnp.asarray(seed, jnp.uint32)))
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params,
                       opt_state=optimizer.init(params), rng=train_key)
    return jax.device_put(state, shardings)
