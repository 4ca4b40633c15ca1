"""Deterministic, checkpointable input: host-local records -> global batches.

How data reaches a step:
  seqio Task/Mixture --(this host's shard, converter)--> host-local records
  (numpy arrays in memory) --(epoch order from the seed)--> host-local batch
  --(jax.make_array_from_process_local_data)--> global jax.Arrays, the batch
  split over the mesh axes of `activation_batch` (alignment.sharding).

Why records are held in memory: every data set of the study (D_golden, a
D_online stream, imported pairs) is at most a few hundred thousand short rows
(50k pairs at 64+32+32 tokens are 25 MB), and in memory the position in the
data is two integers. The iterator state is the small JSON-able dict of
`get_state()` ({"epoch", "batch"} plus what must match on restore); the lead's
checkpoint saves it beside the train state, and `set_state()` then makes the
next batch the one an uninterrupted run would have seen. Nothing of tf.data
needs to be checkpointed, and restoring costs nothing.

Orders (`order=`), recomputed from (seed, epoch) and never stored:
  "ordered"  records in their stored order every epoch (D_online replay);
  "uniform"  a fresh uniform permutation each epoch;
  "window"   the records cut into windows of `window_batches` batches, each
             window shuffled on its own (the paper's partial-shuffle ablation:
             windows of 1 keep batch membership but shuffle rows).
Each epoch yields floor(records / local batch) batches; the rest is dropped.

Hosts: each host loads only its shard of the records (seqio ShardInfo with
jax.process_index()/process_count()), shuffles its own rows with the shared
seed, and contributes global_batch_size / process_count rows to each global
batch. The state records the process count; restoring onto another count is
refused, since the shards and hence the batches would differ.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import zlib
from typing import Any, Mapping

import jax
import numpy as np
import seqio

from alignment import sharding
from alignment.data import converters
from alignment.data.tf_setup import tf

ORDERS = ("ordered", "uniform", "window")


class DataStateError(ValueError):
  pass


def host_shard(process_index: int | None = None,
               process_count: int | None = None) -> tuple[int, int]:
  index = jax.process_index() if process_index is None else process_index
  count = jax.process_count() if process_count is None else process_count
  return index, count


def load_records(provider: str, split: str, kind: str, prompt_length: int = 64,
                 response_length: int = 32, *, process_index: int | None = None,
                 process_count: int | None = None, seed: int = 0,
                 passthrough: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
  """This host's shard of a seqio Task or Mixture, converted and padded, as numpy arrays.

  kind: "sft" | "pairs" | "prompts" (the converter, see converters.CONVERTERS).
  passthrough: extra task features to keep, {name: FeatureConverter.FeatureSpec};
  their lengths are the response length (scalars ignore it).
  Records keep the task's order. A Mixture is loaded as every example of each of
  its tasks, task after task (seqio's streaming mixture stops at the first
  exhausted task, which would drop examples); its rates must therefore be equal.
  """
  index, count = host_shard(process_index, process_count)
  source = seqio.get_mixture_or_task(provider)
  if isinstance(source, seqio.Mixture):
    rates = {t.name: source.get_rate(t) for t in source.tasks}
    if len(set(rates.values())) > 1:
      raise DataStateError(
          f"mixture {provider}: rates {rates} differ; in memory a mixture is every example "
          f"of every task once, so only equal rates mean what they say")
    parts = [load_records(t.name, split, kind, prompt_length, response_length,
                          process_index=index, process_count=count, seed=seed,
                          passthrough=passthrough) for t in source.tasks]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
  cache = _cache_path(source, provider, split, kind, prompt_length, response_length, index,
                      count, seed, passthrough)
  if cache and os.path.exists(cache):
    with np.load(cache) as f:
      return {k: f[k] for k in f.files}
  records = _convert(source, provider, split, kind, prompt_length, response_length, index,
                     count, seed, passthrough)
  if cache:
    tmp = f"{cache}.tmp.{os.getpid()}.npz"
    np.savez(tmp, **records)
    os.replace(tmp, cache)
  return records


def _cache_path(source, provider, split, kind, prompt_length, response_length, index, count,
                seed, passthrough) -> str | None:
  """Where converted records of a locally generated environment task are kept.

  Converting 100k examples through seqio and tf.data takes 10-20 s; the embedded
  environment's data never changes for a given TFDS version, so each (task,
  split, kind, lengths, shard) is converted once and kept as .npz beside the
  TFDS data. Other sources (imported files, streams) are always read afresh.
  """
  from alignment.data import tasks  # pylint: disable=g-import-not-at-top
  if not isinstance(getattr(source, "source", None), tasks.LocalTfdsSource):
    return None
  src = source.source
  key = json.dumps([src.tfds_dataset.name, provider, split, kind, prompt_length,
                    response_length, index, count, seed, sorted(passthrough or {})])
  directory = os.path.join(src._data_dir, "records_cache")  # pylint: disable=protected-access
  os.makedirs(directory, exist_ok=True)
  return os.path.join(directory, hashlib.sha256(key.encode()).hexdigest()[:24] + ".npz")


def _convert(source, provider, split, kind, prompt_length, response_length, index, count,
             seed, passthrough) -> dict[str, np.ndarray]:
  converter = converters.CONVERTERS[kind](passthrough_features=passthrough)
  lengths = converters.task_feature_lengths(kind, prompt_length, response_length)
  lengths.update({name: response_length for name in (passthrough or {})})
  ds = source.get_dataset(sequence_length=lengths, split=split, shuffle=False, num_epochs=1,
                          shard_info=seqio.ShardInfo(index=index, num_shards=count),
                          seed=seed, trim_output_features=False, use_cached=False)
  ds = converter(ds, lengths)
  try:
    chunks = list(ds.batch(4096).as_numpy_iterator())
  except tf.errors.InvalidArgumentError as e:
    m = re.search(r"Feature \\?'(\w+)\\?' has length not less than or equal to the expected "
                  r"length of (\d+).*?\[x[^\]]*\] \[(\d+)\]", str(e), re.S)
    if not m:
      raise
    raise DataStateError(f"{provider}/{split}: a record's {m.group(1)!r} has {m.group(3)} "
                         f"tokens, over the length {m.group(2)}") from None
  names = list(converter.get_model_feature_lengths(lengths))
  if not chunks:
    raise DataStateError(f"{provider}/{split}: no records in shard {index} of {count}")
  return {n: np.concatenate([c[n] for c in chunks]) for n in names}


def batch_from_records(records: Mapping[str, np.ndarray], batch_cls, rows=slice(None)):
  """A typed numpy batch of some rows (fields the class lacks are left out)."""
  fields = batch_cls.__dataclass_fields__
  return batch_cls(**{k: records[k][rows] for k in fields})


def fingerprint(records: Mapping[str, np.ndarray]) -> int:
  """crc32 over every array, in name order: what a restore checks the data against."""
  crc = 0
  for name in sorted(records):
    a = np.ascontiguousarray(records[name])
    crc = zlib.crc32(f"{name}{a.dtype}{a.shape}".encode(), crc)
    crc = zlib.crc32(a.tobytes(), crc)
  return crc


def epoch_order(num_records: int, local_batch: int, order: str, seed: int, epoch: int,
                window_batches: int = 1) -> np.ndarray:
  """Indices of the records in the given epoch's order (module docstring)."""
  if order == "ordered":
    return np.arange(num_records)
  rng = np.random.default_rng([seed, epoch])
  if order == "uniform":
    return rng.permutation(num_records)
  if order == "window":
    if window_batches < 1:
      raise ValueError(f"window_batches={window_batches}: must be at least 1")
    size = window_batches * local_batch
    return np.concatenate([start + rng.permutation(min(size, num_records - start))
                           for start in range(0, num_records, size)])
  raise ValueError(f"order={order!r}: use one of {ORDERS}")


class BatchIterator:
  """Global batches from host-local records; deterministic and checkpointable.

  Yields `batch_cls` instances whose fields are global jax.Arrays with the batch
  sharding of `mesh` (numpy arrays when mesh is None). After each batch,
  `last_indices` holds the host-local record indices it was made of.
  """

  def __init__(self, records: Mapping[str, np.ndarray], batch_cls, global_batch_size: int, *,
               mesh=None, rules=sharding.DEFAULT_RULES, seed: int = 0, order: str = "uniform",
               window_batches: int = 1, num_epochs: int | None = None,
               process_count: int | None = None, name: str = ""):
    self.records = dict(records)
    self.batch_cls = batch_cls
    self.fields = tuple(batch_cls.__dataclass_fields__)
    missing = [f for f in self.fields if f not in self.records]
    if missing:
      raise DataStateError(f"{name}: records lack {missing} needed by {batch_cls.__name__}")
    self.num_records = len(self.records[self.fields[0]])
    _, self.process_count = host_shard(None, process_count)
    if global_batch_size % self.process_count:
      raise DataStateError(f"{name}: global batch {global_batch_size} does not split over "
                           f"{self.process_count} hosts")
    self.global_batch_size = global_batch_size
    self.local_batch = global_batch_size // self.process_count
    self.batches_per_epoch = self.num_records // self.local_batch
    if self.batches_per_epoch == 0:
      raise DataStateError(f"{name}: {self.num_records} records on this host, fewer than one "
                           f"local batch of {self.local_batch}")
    if order not in ORDERS:
      raise ValueError(f"order={order!r}: use one of {ORDERS}")
    self.order, self.window_batches, self.seed = order, int(window_batches), int(seed)
    self.num_epochs, self.name = num_epochs, name
    self.mesh, self.rules = mesh, rules
    if mesh is not None:
      shards = sharding.data_parallel_size(mesh.shape, rules)
      if global_batch_size % shards:
        raise DataStateError(f"{name}: global batch {global_batch_size} does not split over "
                             f"the {shards} batch shards of the mesh")
      self._shardings = {
          f: sharding.batch_sharding(mesh, rules, self.records[f].ndim) for f in self.fields}
    self._fingerprint = fingerprint({f: self.records[f] for f in self.fields})
    self.epoch, self.batch = 0, 0
    self._order_epoch, self._order = None, None
    self.last_indices = None

  # -- state

  def get_state(self) -> dict:
    """A small JSON-able dict; save it with the train state."""
    return {"name": self.name, "epoch": self.epoch, "batch": self.batch, "seed": self.seed,
            "order": self.order, "window_batches": self.window_batches,
            "global_batch_size": self.global_batch_size, "process_count": self.process_count,
            "num_records": self.num_records, "fingerprint": self._fingerprint}

  def set_state(self, state: Mapping[str, Any]) -> None:
    """Resumes where `state` was taken; refuses state saved for other data or settings."""
    mine = self.get_state()
    for key in ("seed", "order", "window_batches", "global_batch_size", "process_count",
                "num_records", "fingerprint"):
      if state.get(key) != mine[key]:
        raise DataStateError(
            f"data iterator {self.name!r}: the saved state has {key}={state.get(key)!r} but "
            f"this run has {mine[key]!r}; the restored input would not continue the run")
    epoch, batch = int(state["epoch"]), int(state["batch"])
    if not 0 <= batch < self.batches_per_epoch or epoch < 0:
      raise DataStateError(f"data iterator {self.name!r}: saved position epoch={epoch} "
                           f"batch={batch} is outside an epoch of {self.batches_per_epoch}")
    self.epoch, self.batch = epoch, batch

  # -- iteration

  def __iter__(self):
    return self

  def _indices(self) -> np.ndarray:
    if self._order_epoch != self.epoch:
      self._order = epoch_order(self.num_records, self.local_batch, self.order, self.seed,
                                self.epoch, self.window_batches)
      self._order_epoch = self.epoch
    start = self.batch * self.local_batch
    return self._order[start:start + self.local_batch]

  def next_local(self):
    """The next batch as this host's numpy rows (advances the iterator)."""
    if self.num_epochs is not None and self.epoch >= self.num_epochs:
      raise StopIteration
    idx = self._indices()
    self.batch += 1
    if self.batch == self.batches_per_epoch:
      self.epoch, self.batch = self.epoch + 1, 0
    self.last_indices = idx
    return batch_from_records(self.records, self.batch_cls, idx)

  def __next__(self):
    local = self.next_local()
    if self.mesh is None:
      return local
    return self.batch_cls(**{
        f: jax.make_array_from_process_local_data(
            self._shardings[f], getattr(local, f),
            (self.global_batch_size,) + getattr(local, f).shape[1:])
        for f in self.fields})


def make_iterator(provider: str, split: str, kind: str, global_batch_size: int, *,
                  prompt_length: int = 64, response_length: int = 32, mesh=None,
                  rules=sharding.DEFAULT_RULES, seed: int = 0, order: str = "uniform",
                  window_batches: int = 1, num_epochs: int | None = None,
                  process_index: int | None = None,
                  process_count: int | None = None,
                  max_records: int | None = None) -> BatchIterator:
  """The iterator a training loop uses, e.g. ("env_sft", "train", "sft", 32, mesh=mesh).

  max_records: keep only N records in all (each host its first N / hosts): a
  limited D_golden.
  """
  records = load_records(provider, split, kind, prompt_length, response_length,
                         process_index=process_index, process_count=process_count, seed=seed)
  if max_records:
    per_host = max_records // host_shard(process_index, process_count)[1]
    records = {k: v[:per_host] for k, v in records.items()}
  return BatchIterator(records, converters.CONVERTERS[kind].BATCH_CLS, global_batch_size,
                       mesh=mesh, rules=rules, seed=seed, order=order,
                       window_batches=window_batches, num_epochs=num_epochs,
                       process_count=process_count, name=f"{provider}/{split}")


def fixed_batch(provider: str, split: str, kind: str, num: int, *, prompt_length: int = 64,
                response_length: int = 32):
  """The first `num` records as one typed numpy batch (eval prompts, classifier pairs).

  Every host gets the same rows (evaluation sets are small and fixed).
  """
  records = load_records(provider, split, kind, prompt_length, response_length,
                         process_index=0, process_count=1)
  have = len(next(iter(records.values())))
  if have < num:
    raise DataStateError(f"{provider}/{split}: {have} records, {num} requested")
  return batch_from_records(records, converters.CONVERTERS[kind].BATCH_CLS, slice(0, num))
