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

The loop then restores or creates the state (`Program.start`) and
calls `program.step`; the AOT check lowers `program.lower()`, the very same
jitted function with the same static arguments (tests/test_aot.py shows it).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from alignment import checkpoint, distributed, evaluation, layout, sharding
from alignment.data import batches as B
from alignment.data import tasks
from alignment.data import vocab as vocab_lib
from alignment.models import heads, zoo
from alignment.train import bookkeeping
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
  tokens: Any = None  # the data vocabulary's record, kept with the export (vocab.token_record)

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

  def start(self, workdir: str, config, vocab, data_iter=None, init_params_from: str = "",
            init_keys=None):
    """(checkpointer, meta, state, start step) of a run in `workdir`.

    The checkpointer keeps config.train.keep_checkpoints in workdir/checkpoints;
    meta (loop, model, vocabulary) is saved with each checkpoint and checked on
    resume; the state is the newest checkpoint's, else fresh, its parameters
    from `init_params_from` when given (`state.restore_or_create`).
    """
    t = config.train
    ckpt = checkpoint.Checkpointer(layout.checkpoints(workdir), t.keep_checkpoints,
                                   t.async_checkpoint)
    meta = {"experiment": self.name, "model": config.model.name,
            "vocab_size": self.model_config.vocab_size,
            "vocabulary": vocab_lib.vocabulary_name(vocab)}
    state, _, start = state_lib.restore_or_create(
        ckpt, self.init, self.optimizer, self.mesh, self.rules, config.seed, meta, data_iter,
        init_params_from, init_keys, (self.abstract_state, self.state_shardings))
    return ckpt, meta, state, start


def set_up(config):
  """(mesh, rules, data vocabulary) of a one-mesh loop, with the host set up."""
  distributed.setup_host()
  mesh, rules = sharding.mesh_and_rules(config.mesh)
  return mesh, rules, tasks.task_vocabulary(config.data.task)


def run_supervised(program: Program, state, start: int, data, config, workdir: str, ckpt,
                   meta: dict, evaluate: Callable[[Any], dict], extra=None) -> dict:
  """The loop of a step without sampling (SFT, the preference model): step,
  bookkeeping (`Run`), held-out `evaluate(params) -> {eval/...}` at the
  `eval.every`/`eval.steps` steps and at the end, then the export.
  Returns the last step's metrics and the final evaluation."""
  run = bookkeeping.Run(config.train, workdir, ckpt, start, program.name, meta)
  for step in range(start, config.train.num_steps):
    state, metrics = program.step(state, next(data))
    if run.end_of_step(step + 1, state, metrics, data.get_state(), extra=extra):
      break
    if evaluation.is_eval_step(config.eval, config.train.num_steps, step + 1):
      run.write(step + 1, evaluate(state.params))
  final = dict(run.last_metrics)
  run.close()
  if not run.stopped_early:
    final.update(evaluate(state.params))
    checkpoint.export_params(state.params, program.model_config,
                             layout.export(workdir), tokens=program.tokens)
  return final


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


def build(name: str, head, config, mesh, rules, vocab,
          loss_fn_of: Callable[[Any], Callable], batch_spec_of: Callable[[Any], Any],
          accepts_veto: bool = False, watch=("loss", "grad_norm")) -> Program:
  """The Program of a loop: its model, abstract state, shardings and jitted step.

  head: the model class (`heads.LanguageModel`, `heads.PairwisePreferenceModel`)
  of the zoo model `config.model` with the vocabulary `model.vocab_size`, else
  `vocab`'s rounded up (a model with fewer ids than `vocab` is a ConfigError
  here, before anything compiles); loss_fn_of(model) -> loss_fn(params, batch, rng);
  batch_spec_of(abstract_state) -> the step's abstract input (it may hold the
  parameters' shapes, e.g. the frozen reference's).
  """
  model_config = zoo.from_section(config.model, vocab_lib.model_vocab_size(vocab))
  # Every loop (and aot, bench) builds here: refuse before anything compiles.
  vocab_lib.check_model_vocab(model_config.vocab_size, vocab,
                              f"config.model ({config.model.name}, vocab_size="
                              f"{config.model.vocab_size}) and config.data.task="
                              f"{config.data.task!r}")
  model = head(model_config)
  optimizer = state_lib.make_optimizer(config.optimizer)
  init = heads.init_fn(model, config.data.prompt_len, config.data.response_len)
  abstract_state, state_shardings = state_lib.abstract(init, optimizer, mesh, rules, 0)
  spec = batch_spec_of(abstract_state)
  step = state_lib.make_step(loss_fn_of(model), optimizer, state_shardings,
                             jax.tree.map(lambda x: x.sharding, spec), mesh, rules,
                             watch=watch, accepts_veto=accepts_veto)
  return Program(name, model, model_config, optimizer, init, mesh, rules, state_shardings,
                 abstract_state, spec, step, accepts_veto, vocab_lib.token_record(vocab))
