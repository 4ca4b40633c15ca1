"""A loop's train step as one program: what the loop runs, `alignment.aot`
compiles and `alignment.bench` times.

Each loop module (`sft`, `preference_model`, `offline`, `online`) has a
`build(config, mesh, rules, vocab_size, ...) -> Program` that makes, from its
config sections alone and without allocating anything:

  model, optimizer, init   the network, AdamW + schedule, rng -> boxed params
  state_shardings          where each leaf of the TrainState lives
  abstract_state           ShapeDtypeStructs (with shardings) of the TrainState
  batch_spec               ShapeDtypeStructs (with shardings) of the step's input
  step                     `state.make_step(...)` at the config's learning rate:
                           step(state, batch[, accept])

The loop then restores or creates the state (`Program.start`) and
calls `program.step`; the AOT check lowers `program.lower()`, the very same
jitted function with the same static arguments (tests/test_aot.py shows it).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from alignment import checkpoint, distributed, evaluation, faults, layout, programs, sampling
from alignment import sharding
from alignment.data import batches as B
from alignment.data import tasks
from alignment.data import vocab as vocab_lib
from alignment.models import heads, zoo
from alignment.train import bookkeeping
from alignment.train import state as state_lib

log = logging.getLogger("alignment")


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
  tokens: Any = None  # the vocabulary record kept with the export (`export_tokens`)

  @property
  def batch_shardings(self):
    return jax.tree.map(lambda x: x.sharding, self.batch_spec)

  def lower(self):
    """The step lowered on abstract inputs (nothing allocated): `.compile()` it."""
    veto = ()
    if self.accepts_veto:
      veto = (jax.ShapeDtypeStruct((), jnp.bool_, sharding=sharding.replicated(self.mesh)),)
    return self.step.lower(self.abstract_state, self.batch_spec, *veto)

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
                   meta: dict, evaluate: Callable[[Any], dict], extra=None,
                   criterion: Optional["Criterion"] = None) -> dict:
  """The loop of a step without sampling (SFT, the preference model): step,
  bookkeeping (`Run`), held-out `evaluate(params) -> {eval/...}` at the
  `eval.every`/`eval.steps` steps and at the end, then the export.
  Returns the last step's metrics and the final evaluation.

  criterion: SFT's stopping rule (`Criterion`), watched at those evaluations; with
  it, the summary also holds `steps_trained` (the step the run ended at) and
  `criterion_fired`. When it fires at step S, the loop saves the checkpoint of S,
  writes one `criterion/*` record at S into metrics.jsonl and ends as a full run
  does (final evaluation, export). A resumed run rebuilds the losses from the
  evaluation records up to its checkpoint (`criterion_history`; a checkpoint of an
  evaluation step whose evaluation was never written, killed between the two, is
  evaluated first), so it stops where an uninterrupted run stops; a run that
  stopped there already finishes without a step. The stopping lives here, in the one loop that owns the order of step,
  evaluation, checkpoint and export (a copy of the loop in sft.py would drift from
  it); the rule is SFT's alone: the preference model's held-out figures are an
  accuracy, not a loss to level off, so it passes none, configs/pm.py has no
  `criterion` section (an override of one is the locked config's error) and
  `config.validate` refuses the section in any experiment but SFT.
  """
  t = config.train
  run = bookkeeping.Run(t, workdir, ckpt, start, program.name, meta)
  watching = criterion is not None and criterion.on
  evals: list[tuple[int, float]] = []  # (step, held-out loss) of every evaluation so far
  stopped_at = None

  def stop_here(step: int, state):
    """The rule fired at `step`: its checkpoint (unless saved already) and its record."""
    if ckpt.latest_step() != step:  # in flight counts: the step's save was started
      ckpt.save(step, state, data.get_state(), meta)
    record = criterion.record(step, evals)
    run.write(step, record)
    log.warning("stopping at step %d: the last %d evaluations' %s improved by no more than %g "
                "(relative) on the best before them, %.6g; checkpoint saved", step,
                criterion.patience, criterion.metric, criterion.tol,
                record["criterion/best_before"])

  if watching:
    # After Run: on resume its RunLog has cut metrics.jsonl to the records up to `start`.
    history = criterion_history(workdir, start, criterion.metric)
    evals = history["evals"]
    if (start and evaluation.is_eval_step(config.eval, t.num_steps, start) and
        start not in [s for s, _ in evals]):  # killed after the step's checkpoint, before
      held_out = evaluate(state.params)     # its evaluation was written: evaluate it now
      run.write(start, held_out)
      evals.append((start, held_out[criterion.metric]))
    if criterion.first_stop([l for _, l in evals]) is not None:  # it stopped here already
      stopped_at = start
      if start not in history["stopped"]:  # killed before the record was written
        stop_here(start, state)
      log.warning("step %d: the run has met its criterion already; finishing it there",
                  start)
  reached = start  # the step the run ends at
  for step in range(start, t.num_steps if stopped_at is None else start):  # none if stopped
    state, metrics = program.step(state, next(data))
    reached = step + 1
    if run.end_of_step(step + 1, state, metrics, data.get_state(), extra=extra):
      break
    if evaluation.is_eval_step(config.eval, t.num_steps, step + 1):
      held_out = evaluate(state.params)
      run.write(step + 1, held_out)
      if watching:
        evals.append((step + 1, held_out[criterion.metric]))
        if criterion.fires([l for _, l in evals]):
          stopped_at = step + 1
          stop_here(stopped_at, state)
          break
  final = dict(run.last_metrics)
  run.close()
  if not run.stopped_early:
    final.update(evaluate(state.params))
    checkpoint.export_params(state.params, program.model_config,
                             layout.export(workdir), tokens=program.tokens)
  if criterion is not None:
    final.update(steps_trained=reached, criterion_fired=stopped_at is not None)
  return final


# ---------------------------------------------------------------------------
# Trained to a criterion (SFT's `criterion` section)
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Criterion:
  """Stop when the held-out loss levels off (configs/sft.py, `criterion`).

  At each evaluation, with the held-out losses l_1 .. l_n so far in order: the
  run stops when n > patience and none of the last `patience` losses improves
  on the best before them, b = min(l_1 .. l_{n-patience}), by more than `tol`
  relative, i.e. min(l_{n-patience+1} .. l_n) >= b - tol * |b| (b * (1 - tol) for
  a loss >= 0). An equal loss is no improvement, so a loss that stays exactly
  flat stops the run, also with tol = 0; a NaN improves on nothing. patience 0:
  never (the criterion is off). A pure function of the losses: every process,
  and a resumed run, decides the same.
  """
  patience: int = 0
  tol: float = 0.0
  metric: str = "eval/loss"

  @classmethod
  def of(cls, section) -> "Criterion":
    """The config's `criterion` section (None, as in a config without one: off)."""
    if section is None:
      return cls()
    return cls(int(section.patience), float(section.tol))

  @property
  def on(self) -> bool:
    return self.patience > 0

  def fires(self, losses: Sequence[float]) -> bool:
    """Whether the rule stops the run at the newest of `losses` (class docstring)."""
    p = self.patience
    if p <= 0 or len(losses) <= p:
      return False
    before = [x for x in losses[:-p] if math.isfinite(x)]
    if not before:  # nothing to improve on
      return False
    best = min(before)
    bar = best - self.tol * abs(best)
    return not any(x < bar for x in losses[-p:])

  def first_stop(self, losses: Sequence[float]) -> Optional[int]:
    """The index of the first loss at which the rule fires, else None."""
    return next((n - 1 for n in range(1, len(losses) + 1) if self.fires(losses[:n])), None)

  def best(self, evals: Sequence[tuple[int, float]]) -> tuple[int, float]:
    """(step, loss) of the lowest finite held-out loss (the first such)."""
    finite = [(s, l) for s, l in evals if math.isfinite(l)]
    return min(finite, key=lambda e: e[1]) if finite else (0, float("nan"))

  def record(self, step: int, evals: Sequence[tuple[int, float]]) -> dict:
    """The metrics.jsonl record of a stop at `step`: where, why (the best loss before
    the last `patience` evaluations, which none of them beat by more than `tol`), and
    the best loss of all with its step."""
    best_step, best_loss = self.best(evals)
    return {"criterion/stopped_at": step, "criterion/best_loss": best_loss,
            "criterion/best_step": best_step,
            "criterion/best_before": self.best(evals[:-self.patience])[1],
            "criterion/patience": self.patience, "criterion/tol": self.tol,
            "criterion/evaluations": len(evals)}


def criterion_history(workdir: str, start: int, metric: str = "eval/loss") -> dict:
  """What a resumed run's criterion needs from <workdir>/metrics.jsonl: `evals`, the
  (step, `metric`) of its evaluation records, and `stopped`, the steps of its
  `criterion/stopped_at` records, all at steps <= `start`.

  Process 0 alone writes the file (and cuts it to `start` on resume): it reads it
  and sends what it found to every process (`_from_process_0`, a collective, so
  no process reads the file early or on a disk that is not process 0's)."""
  text = json.dumps({"evals": [], "stopped": []})
  if distributed.is_main() and start > 0:
    records = [r for r in bookkeeping.read_metrics(workdir) if r.get("step", 0) <= start]
    text = json.dumps({"evals": [[r["step"], r[metric]] for r in records if metric in r],
                       "stopped": [r["step"] for r in records
                                   if "criterion/stopped_at" in r]})
  got = json.loads(_from_process_0(text))
  return {"evals": [(int(s), float(l)) for s, l in got["evals"]],
          "stopped": set(int(s) for s in got["stopped"])}


def _from_process_0(text: str) -> str:
  """Process 0's `text` on every process (`text` itself in a single process). JSON
  text, not float arrays: the losses arrive bit for bit (no float32 on the way)."""
  if jax.process_count() == 1:
    return text
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  data = np.frombuffer(text.encode(), np.uint8).astype(np.int32)
  n = int(multihost_utils.broadcast_one_to_all(np.int32(data.size)))
  buf = np.zeros(n, np.int32)
  buf[:min(n, data.size)] = data[:n]  # only process 0's counts
  got = np.asarray(multihost_utils.broadcast_one_to_all(buf))
  return got.astype(np.uint8).tobytes().decode()


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


# The train steps made in this process: a study's stages of one shape (an experiment's
# arms, their seeds) run the step the first of them traced and compiled (`_step_key`).
_STEPS = programs.Memo(16)

# What of an experiment config a train step's trace never reads: where its data come
# from and in which order, the seed (the state's key is an input), the learning rate
# (an input too: `state.Step`), how many steps the loop takes, the evaluation,
# the initialisation (parameters are an input), the judge (its verdicts are) and the
# loop's bookkeeping. Everything else is part of the key the step is shared under.
_UNTRACED = ("seed", "optimizer.learning_rate", "eval", "init", "judge", "criterion",
             "data.replay_dir", "data.replay_order", "data.replay_skip",
             "data.replay_window", "data.shuffle_seed", "data.max_records",
             "train.num_steps", "train.checkpoint_every", "train.keep_checkpoints",
             "train.log_every", "train.on_nonfinite", "train.async_checkpoint",
             "train.write_stream")


# The abstract train states (shapes and shardings, from tracing the model's
# initialisation) made in this process, for the same reason.
_ABSTRACT = programs.Memo(16)


def _abstract_key(head, model_config, config, mesh, rules) -> tuple:
  """What `state.abstract` of a Program's model and optimiser is made from (not the
  learning rate: the optimiser's state has the parameters' shapes whatever it is)."""
  d = config.data
  optimizer = {k: v for k, v in config.optimizer.to_dict().items() if k != "learning_rate"}
  return ("abstract_state", head, model_config, json.dumps(optimizer, sort_keys=True,
                                                           default=repr),
          int(d.prompt_len), int(d.response_len), mesh, rules)


def _traced_config(config) -> str:
  """The config less `_UNTRACED`, as canonical JSON."""
  tree = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  for path in _UNTRACED:
    *parents, leaf = path.split(".")
    node = tree
    for p in parents:
      node = node.get(p) if isinstance(node, dict) else None
    if isinstance(node, dict):
      node.pop(leaf, None)
  return json.dumps(tree, sort_keys=True, default=repr)


def _signature(tree) -> tuple:
  """Structure, shapes, dtypes and shardings of an abstract tree (hashable)."""
  leaves, treedef = jax.tree.flatten(tree)
  return treedef, tuple((tuple(x.shape), str(x.dtype), getattr(x, "sharding", None))
                        for x in leaves)


def _step_key(name, head, config, model_config, abstract_state, spec, mesh, rules,
              accepts_veto, watch, traced_from) -> Optional[tuple]:
  """Everything a loop's train step is traced from; None: not shared."""
  try:
    hash(rules)
    hash(traced_from)
  except TypeError:
    return None
  return ("train_step", name, head, _traced_config(config), model_config,
          _signature(abstract_state), _signature(spec), mesh, rules, accepts_veto,
          tuple(watch), tuple(faults.nan_steps("loss")), tuple(faults.nan_steps("grad")),
          traced_from)


def build(name: str, head, config, mesh, rules, vocab,
          loss_fn_of: Callable[[Any], Callable], batch_spec_of: Callable[[Any], Any],
          accepts_veto: bool = False, watch=("loss", "grad_norm"),
          traced_from: tuple = ()) -> Program:
  """The Program of a loop: its model, abstract state, shardings and jitted step.

  head: the model class (`heads.LanguageModel`, `heads.PairwisePreferenceModel`)
  of the zoo model `config.model` with the vocabulary `model.vocab_size`, else
  `vocab`'s rounded up (a model with fewer ids than `vocab` is a ConfigError
  here, before anything compiles); loss_fn_of(model) -> loss_fn(params, batch, rng);
  batch_spec_of(abstract_state) -> the step's abstract input (it may hold the
  parameters' shapes, e.g. the frozen reference's).

  The jitted step is made once per process for equal keys (`_step_key`): the config
  less what a step never reads (`_UNTRACED`), the model, the abstract state and input
  with their shardings, the mesh and rules, the planned faults and `traced_from`:
  whatever else `loss_fn_of` and `batch_spec_of` read (hashable). A later stage of
  the same shape runs it without tracing or loading it again, at its own learning
  rate (`state.Step.at`).
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
  abstract_state, state_shardings = _ABSTRACT.get(
      _abstract_key(head, model_config, config, mesh, rules),
      lambda: state_lib.abstract(init, optimizer, mesh, rules, 0))
  spec = batch_spec_of(abstract_state)
  step = _STEPS.get(
      _step_key(name, head, config, model_config, abstract_state, spec, mesh, rules,
                accepts_veto, watch, traced_from),
      lambda: state_lib.make_step(loss_fn_of(model), config.optimizer, state_shardings,
                                  jax.tree.map(lambda x: x.sharding, spec), mesh, rules,
                                  watch=watch, accepts_veto=accepts_veto))
  step = step.at(config.optimizer.learning_rate)
  return Program(name, model, model_config, optimizer, init, mesh, rules, state_shardings,
                 abstract_state, spec, step, accepts_veto, export_tokens(vocab, config))


def export_tokens(vocab, config) -> dict:
  """The vocabulary record every export of the run carries (vocabulary.json): its data
  vocabulary's (`vocab.token_record`: tokenizer, which brings the chat template along,
  EOS and a template's end-of-turn id), with every EOS id the export it starts from
  records (`config.init.policy` or `.backbone`; a converted Llama 3.1 Instruct's
  [128001, 128008, 128009]) appended: the ids its samplers stop at
  (`sampling.with_model_eos`), so the list survives SFT -> PM -> online or offline, and
  the Hugging Face export writes it to generation_config.json."""
  record = vocab_lib.token_record(vocab)
  init = config.get("init") or {}
  start = init.get("policy") or init.get("backbone") or ""
  eos = record["eos_token_id"]
  ids = sampling.with_model_eos({"eos_id": tuple(eos) if isinstance(eos, list) else eos},
                                start)["eos_id"]
  return dict(record, eos_token_id=list(ids) if isinstance(ids, tuple) else ids)
