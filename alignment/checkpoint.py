"""Orbax checkpoints: train state + data-iterator state + metadata, keep-N, resume.

A checkpoint of step N holds three items:
  state  the TrainState pytree (step, params, optimiser state, PRNG key),
         saved from its shards and restored INTO a sharded abstract state
         (ShapeDtypeStructs with shardings), so restoring onto another mesh
         shape is a reshard, never a gather on one host;
  data   the input iterator's JSON state: the next batch after a restore is
         the one an uninterrupted run would have seen;
  meta   JSON: model name and architecture, the experiment config, anything
         the loop wants to check on restore (e.g. a config mismatch);
and, for a loop that samples with older parameters (online with
`rl.staleness` = k), a fourth:
  history  those older parameter sets (a list of params pytrees; their steps in
         meta's `history_steps`), so a resumed run samples with the parameters
         an uninterrupted one would (`Checkpointer.restore_history`).

Order of resume sources (first that exists wins): the newest complete
checkpoint in <workdir>/checkpoints; else the experiment's `init.*`
checkpoints (e.g. the SFT policy for alignment); else fresh initialisation.

Orbax writes each step into a temporary directory and renames it when
complete, so a killed save never looks like a finished checkpoint; saves can
run asynchronously while training continues (`wait()` joins them). A save
that fails (a full disk: OSError ENOSPC) removes what it wrote of its step
before the error goes on, so the previous checkpoint stays the newest. In a
single-process job each replicated array is written whole by one replica
(`_one_writer_per_array`); `load_params` keeps what it read, as host arrays, for
the next read of the same files (a study's stages read the same exports).

A foundation: it saves and restores pytrees and writes params exports as
files, and knows nothing of the models. What needs a model (the sharded
restore target of its parameters, an export loaded as a model) is
`alignment.models.zoo`'s, which builds models by name and by recorded config.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from alignment import distributed, faults, files, programs, timing

log = logging.getLogger(__name__)

_ONE_WRITER = []  # set once per process: [True] after `_one_writer_per_array`


def _one_writer_per_array() -> None:
  """In a single-process job, every array is written whole by its first replica.

  orbax's default (replica-parallel saving) cuts each replicated array into one
  slice per device so that the hosts of a pod slice share its writing; in one
  process the same process writes every slice, after a device slice and a host
  transfer for each (120 arrays on 8 devices: 960 dispatched slices a save). On 8
  CPU devices a save of a t5-nano-sized state took 0.75 s with them and 0.35 s
  without (save plus its wait). The files read back the same; multi-process jobs
  keep the default. Called before the first save of the process, when JAX knows
  its process count; it re-registers orbax's global handler for jax.Array.
  """
  if _ONE_WRITER or jax.process_count() > 1:
    return
  from orbax.checkpoint._src.metadata import array_metadata_store  # pylint: disable=g-import-not-at-top
  absl_log = logging.getLogger("absl")  # orbax warns of every override
  level = absl_log.level
  absl_log.setLevel(logging.ERROR)
  try:
    ocp.type_handlers.register_type_handler(
        jax.Array, ocp.type_handlers.ArrayHandler(
            use_replica_parallel=False, array_metadata_store=array_metadata_store.Store()),
        override=True)
  finally:
    absl_log.setLevel(level)
  _ONE_WRITER.append(True)


class CheckpointError(RuntimeError):
  """A checkpoint that cannot be used: names the directory and what is wrong."""


class Checkpointer:
  """Keeps the newest `keep` checkpoints of a run under `directory`."""

  def __init__(self, directory: str, keep: int = 3, async_save: bool = True):
    self.directory = absolute(directory)
    _one_writer_per_array()
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, enable_async_checkpointing=async_save, create=True)
    self._manager = ocp.CheckpointManager(
        self.directory, options=options, item_names=("state", "data", "meta", "history"))

  # -- queries ---------------------------------------------------------------
  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def newest_complete_step(self) -> Optional[int]:
    """The newest step whose save finished on every process, read from the directory
    (safe from any thread; a save still in flight is not counted)."""
    steps = ocp.path.step.checkpoint_steps(self.directory) \
        if epath.Path(self.directory).exists() else []
    return max(steps) if steps else None

  # -- save ------------------------------------------------------------------
  @timing.timed("checkpoint")
  def save(self, step: int, state: Any, data_state: dict | None = None,
           meta: dict | None = None, force: bool = True,
           history: tuple[list[int], list[Any]] | None = None) -> bool:
    """Saves asynchronously (if enabled); the state's checksum goes into meta. A save
    that fails leaves nothing of its step behind.

    history: (steps, params trees) of older parameters the run still needs after a
    resume (`alignment.train.rollouts.StaleParams`), saved as the `history` item with
    their steps and checksum in meta; None saves no such item.
    """
    meta = dict(meta or {}, checksum=tree_checksum(state))
    items = dict(state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state or {}))
    if history is not None:
      steps, trees = history
      meta.update(history_steps=[int(s) for s in steps], history_checksum=tree_checksum(trees))
      items["history"] = ocp.args.StandardSave(list(trees))
    args = ocp.args.Composite(meta=ocp.args.JsonSave(meta), **items)
    try:
      saved = self._manager.save(int(step), args=args, force=force)
      faults.hit("during_checkpoint", int(step))
      faults.hit("checkpoint", int(step), path=os.path.join(self.directory, str(step)))
    except Exception:
      self._discard_unfinished(int(step))
      raise
    return saved

  def _discard_unfinished(self, step: Optional[int] = None) -> None:
    """Removes the remains of failed saves: every temporary step directory, and
    `step` itself (its save raised, so it is not trusted even if it completed)."""
    with contextlib.suppress(Exception):
      self._manager.wait_until_finished()
    if step is not None and step in self._manager.all_steps():
      with contextlib.suppress(Exception):
        self._manager.delete(step)
    if jax.process_index() != 0:
      return
    for d in epath.Path(self.directory).iterdir():
      if ".orbax-checkpoint-tmp" in d.name or (step is not None and d.name == str(step)):
        d.rmtree(missing_ok=True)
    self._manager.reload()

  @timing.timed("checkpoint")
  def wait(self):
    try:
      self._manager.wait_until_finished()
    except Exception:  # an async save failed (a full disk): drop its remains
      self._discard_unfinished()
      raise

  @timing.timed("checkpoint")
  def close(self):
    self.wait()
    self._manager.close()

  # -- restore ---------------------------------------------------------------
  def restore(self, abstract_state: Any, step: Optional[int] = None):
    """(state, data_state, meta) of `step`, else of the newest usable checkpoint.

    abstract_state: pytree of jax.ShapeDtypeStruct with `sharding` set, the
    target layout (any mesh). A checkpoint that cannot be read, or whose
    contents do not match the checksum saved with it, is reported and the
    previous one is tried; the unusable newer ones are then deleted, so the
    run continues from the good one.
    """
    steps = [step] if step is not None else sorted(self.all_steps(), reverse=True)
    if not steps:
      raise CheckpointError(f"{self.directory}: no checkpoint to restore")
    problems = []
    for s in steps:
      try:
        out = self._restore_one(abstract_state, s)
      except CheckpointError as e:
        problems.append(str(e))
        log.warning("%s", e)
        continue
      if problems:
        bad = [b for b in self.all_steps() if b > s]
        log.warning("%s: restored the previous good checkpoint, step %d; deleting the "
                    "unusable newer step(s) %s", self.directory, s, bad)
        for b in bad:
          self._manager.delete(b)
      return out
    raise CheckpointError(f"{self.directory}: no usable checkpoint: " + "; ".join(problems))

  def _restore_one(self, abstract_state: Any, step: int):
    args = ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        data=ocp.args.JsonRestore(),
        meta=ocp.args.JsonRestore())
    try:
      out = self._manager.restore(step, args=args)
    except Exception as e:  # orbax raises many types for shape/structure mismatch
      raise CheckpointError(f"{self.directory}/{step}: cannot restore: "
                            f"{type(e).__name__}: {str(e)[:300]}") from None
    meta = dict(out.meta or {})
    if "checksum" in meta and tree_checksum(out.state) != meta["checksum"]:
      raise CheckpointError(f"{self.directory}/{step}: contents do not match the checksum "
                            "saved with them: the checkpoint is corrupt or was tampered with")
    return out.state, dict(out.data or {}), meta

  def read_meta(self, step: Optional[int] = None) -> dict:
    step = self.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f"{self.directory}: no checkpoint")
    out = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(out.meta or {})

  def restore_history(self, step: int, abstract_params: Any) -> list[tuple[int, Any]] | None:
    """[(step, params)] of the `history` item saved with checkpoint `step`, each
    restored into `abstract_params` (ShapeDtypeStructs with shardings); None when
    that checkpoint holds no history (saved without one). A history that cannot be
    read or fails its checksum is a CheckpointError naming the step."""
    steps = self.read_meta(step).get("history_steps")
    if steps is None:
      return None
    if not steps:
      return []
    where = f"{self.directory}/{step}/history"
    try:
      out = self._manager.restore(step, args=ocp.args.Composite(
          history=ocp.args.StandardRestore([abstract_params] * len(steps))))
    except Exception as e:  # orbax raises many types for shape/structure mismatch
      raise CheckpointError(f"{where}: cannot restore: {type(e).__name__}: "
                            f"{str(e)[:300]}") from None
    trees = list(out.history)
    if tree_checksum(trees) != self.read_meta(step).get("history_checksum"):
      raise CheckpointError(f"{where}: contents do not match the checksum saved with them: "
                            "the checkpoint is corrupt or was tampered with")
    return list(zip(steps, trees))


def _check_shapes(saved_tree: Any, target: Any, where: str, prefix: str = ""):
  """Clear error when a checkpoint holds another model (size, vocabulary, head)."""
  saved = {jax.tree_util.keystr(p): getattr(m, "shape", None)
           for p, m in jax.tree_util.tree_leaves_with_path(saved_tree)}
  for path, x in jax.tree_util.tree_leaves_with_path(target):
    key = prefix + jax.tree_util.keystr(path)
    if key not in saved:
      raise CheckpointError(f"{where}: has no parameter {key}: written by another model "
                            "or head?")
    if tuple(saved[key]) != tuple(x.shape):
      raise CheckpointError(f"{where}: {key} has shape {tuple(saved[key])} but the model "
                            f"expects {tuple(x.shape)}: written by another model size?")


def load_params(path: str, abstract_params: Any, step: Optional[int] = None):
  """Parameters only, into `abstract_params` (ShapeDtypeStructs with shardings).

  `path` is either a params export (`<path>/params` + `model_config.json`, as
  written by `export_params` and `alignment.models.convert`) or a run's
  checkpoint directory, whose newest (or given) step is read partially.
  """
  path = absolute(path)
  if epath.Path(path, "params").is_dir():
    item_dir, prefix, target = os.path.join(path, "params"), "", abstract_params
  else:
    steps = sorted(int(d.name) for d in epath.Path(path).iterdir() if d.name.isdigit()) \
        if epath.Path(path).is_dir() else []
    if not steps:
      raise CheckpointError(f"{path}: neither a params export nor a checkpoint directory")
    step = steps[-1] if step is None else step
    item_dir, prefix, target = os.path.join(path, str(step), "state"), "['params']", {
        "params": abstract_params}
  key = _params_key(item_dir, prefix, abstract_params)
  if key is None:
    return _read_params(item_dir, prefix, target, abstract_params)
  host = _LOADED.get(key, lambda: jax.tree.map(
      np.asarray, _read_params(item_dir, prefix, target, abstract_params)))
  return jax.tree.map(lambda h, t: jax.device_put(h, t.sharding), host, abstract_params)


# Parameters read from exports and checkpoints in this process, as host arrays: a
# study's stages read the same SFT and PM exports (as policy, reference, judge) dozens
# of times. Keyed on every file's identity (inode, size, modification time): a
# rewritten export is read again. Each caller gets its own device copy (a train step
# donates its state).
_LOADED = programs.Memo(6, read_only=True)


def _params_key(item_dir: str, prefix: str, abstract_params) -> Optional[tuple]:
  """What `load_params` reads (None: not remembered: a multi-process job's shards)."""
  leaves, treedef = jax.tree.flatten(abstract_params)
  if jax.process_count() > 1 or not leaves or not all(
      getattr(x, "sharding", None) is not None and x.sharding.is_fully_addressable
      for x in leaves):
    return None
  files = []
  for root, _, names in os.walk(item_dir):
    for name in names:
      path = os.path.join(root, name)
      st = os.stat(path)
      files.append((os.path.relpath(path, item_dir), st.st_ino, st.st_size, st.st_mtime_ns))
  return ("params", item_dir, prefix, tuple(sorted(files)), treedef,
          tuple((tuple(x.shape), str(x.dtype)) for x in leaves))


def _read_params(item_dir: str, prefix: str, target, abstract_params):
  ckpt = _restorer(abstract_params)
  try:
    saved = ckpt.metadata(item_dir).item_metadata.tree
  except Exception as e:  # pylint: disable=broad-except
    raise CheckpointError(f"{item_dir}: unreadable checkpoint metadata: "
                          f"{_one_line(e, 500)}") from None
  _check_shapes(saved, abstract_params, item_dir, prefix)
  restore_args = jax.tree.map(
      lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding, dtype=x.dtype), target)
  try:
    out = ckpt.restore(item_dir, args=ocp.args.PyTreeRestore(
        item=target, restore_args=restore_args, partial_restore=True))
  except Exception as e:  # pylint: disable=broad-except
    raise CheckpointError(f"{item_dir}: cannot restore parameters: {type(e).__name__}: "
                          f"{_one_line(e, 500)}") from None
  return out if prefix == "" else out["params"]


def _one_line(e: BaseException, limit: int) -> str:
  """An error's text on one line (orbax's span several), cut to `limit` characters."""
  text = " ".join(str(e).split())
  return text if len(text) <= limit else text[:limit] + "..."


def _restorer(abstract_params) -> ocp.Checkpointer:
  """orbax's checkpointer for a restore into `abstract_params`. Its restore ends in a
  barrier of every process, unless told that this process restores alone: so it is,
  in a multi-process run, when the target lives on this process's devices only (a
  study's pair set, sampled by process 0 while the others wait)."""
  leaves = jax.tree.leaves(abstract_params)
  if jax.process_count() == 1 or not leaves or not all(
      x.sharding.is_fully_addressable for x in leaves):
    return ocp.PyTreeCheckpointer()
  alone = ocp.options.MultiprocessingOptions(primary_host=jax.process_index(),
                                             active_processes={jax.process_index()})
  return ocp.Checkpointer(ocp.PyTreeCheckpointHandler(multiprocessing_options=alone),
                          multiprocessing_options=alone)


MODEL_CONFIG_FILE = "model_config.json"
TOKENS_FILE = "vocabulary.json"


@timing.timed("export")
def export_params(params: Any, model_cfg: Any, output: str, tokens: dict | None = None):
  """Writes <output>/params and <output>/model_config.json atomically: built in
  <output>.tmp and renamed; if writing fails (a full disk), the temporary
  directory is removed and an older <output> is left as it was.

  tokens: the data vocabulary's record (`vocab.token_record`), written as
  <output>/vocabulary.json: the tokenizer and special ids a Hugging Face export of
  these parameters must carry (a Llama 3 policy ends at 128001, not at 1)."""
  output = absolute(output)
  tmp = output + ".tmp"
  if jax.process_index() == 0 and epath.Path(tmp).exists():
    epath.Path(tmp).rmtree()
  distributed.barrier("export_params:clean")  # every process writes its shards below
  _one_writer_per_array()
  try:
    with ocp.StandardCheckpointer() as ckpt:
      ckpt.save(os.path.join(tmp, "params"), params)
    if jax.process_index() == 0:
      files.write_json(os.path.join(tmp, MODEL_CONFIG_FILE),
                       {"architecture": model_cfg.architecture,
                        **{k: v for k, v in dataclasses.asdict(model_cfg).items()
                           if k != "architecture"}})
      if tokens is not None:
        files.write_json(os.path.join(tmp, TOKENS_FILE), tokens)
      faults.hit("export", "", path=os.path.join(tmp, MODEL_CONFIG_FILE))
  except Exception:
    if jax.process_index() == 0:
      epath.Path(tmp).rmtree(missing_ok=True)
    raise
  if jax.process_index() == 0:
    if epath.Path(output).exists():
      epath.Path(output).rmtree()
    epath.Path(tmp).rename(output)
  distributed.barrier("export_params:done")  # nobody reads the export before it exists


def tree_checksum(tree: Any) -> int:
  """A uint32 checksum of every bit of every array (any sharding), computed on device.

  Each leaf's words are summed with odd position weights modulo 2^32, so a
  flipped bit always changes the sum; leaves are combined the same way.
  """
  leaves = [x for x in jax.tree.leaves(tree) if hasattr(x, "dtype")]
  return int(_checksum(leaves)) if leaves else 0


@jax.jit
def _checksum(leaves):
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  total = jnp.uint32(0)
  for i, x in enumerate(leaves):
    x = jnp.asarray(x)
    if x.dtype == jnp.bool_:
      words = x.astype(jnp.uint32)
    elif x.dtype.itemsize == 4:
      words = jax.lax.bitcast_convert_type(x, jnp.uint32)
    elif x.dtype.itemsize == 2:
      words = jax.lax.bitcast_convert_type(x, jnp.uint16).astype(jnp.uint32)
    elif x.dtype.itemsize == 8:
      words = jax.lax.bitcast_convert_type(x, jnp.uint32)  # [..., 2]
    else:
      words = x.astype(jnp.uint32)
    words = words.reshape(-1)
    weights = (jnp.arange(words.shape[0], dtype=jnp.uint32) % jnp.uint32(32768)) * 2 + 1
    total = total * jnp.uint32(2654435761) + jnp.sum(words * weights, dtype=jnp.uint32) + i
  return total


def abstract_like(state: Any) -> Any:
  """ShapeDtypeStructs (with shardings) of a live state: a restore target."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
      state)


def absolute(path: str) -> str:
  """An absolute local path; a URL (gs://bucket/run, needed by multi-host runs, whose
  processes must all see the checkpoints) is kept as it is."""
  return path if "://" in str(path) else os.path.abspath(path)


def load_tokens(path: str) -> dict | None:
  """The vocabulary record of a params export (`export_params`'s tokens), or None."""
  file = os.path.join(path, TOKENS_FILE)
  if not os.path.exists(file):
    return None
  try:
    with open(file) as f:
      record = json.load(f)
  except (OSError, ValueError) as e:
    raise CheckpointError(f"{file}: unreadable ({e})") from None
  if not isinstance(record, dict):
    raise CheckpointError(f"{file}: not a vocabulary record (a JSON object)")
  return record
