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

Hosts and virtual shards: the global batch must not depend on how many
processes read it, or a run could not move between slices (and a checkpoint
written by 2 processes could not be resumed by 1). So the records are cut into
a fixed number V of VIRTUAL SHARDS (`data.virtual_shards`, default 8), by
seqio itself: virtual shard v is `ShardInfo(index=v, num_shards=V)` of the
task, whatever the process count. Every global batch of B rows is made of
B / V rows from each virtual shard, shard v filling rows [v*B/V, (v+1)*B/V).
Each virtual shard walks through its own records in its own order, seeded by
(seed, v, epoch of that shard): shards never need to agree on an epoch
boundary, so no host needs to know the others' sizes. Host h owns the
virtual shards whose rows its devices hold in the batch sharding (with the
usual process-major device order: the contiguous block [h*V/P, (h+1)*V/P)),
reads only those through seqio, and passes their rows, in row order, to
`jax.make_array_from_process_local_data`. Hence any process count P that
divides V gives the same global batches, row for row; V must divide the
global batch size. The iterator state is the global batch counter plus what
must match (seed, order, V, batch size, and each virtual shard's size and
fingerprint), the same on every host: a checkpoint resumes on any P | V.
Shuffles ("uniform", "window") move a row only within its virtual shard's
rows of the batch (its position in the batch, not its batch, is fixed).

Without `virtual_shards` (None, the default of the functions below;
`data.virtual_shards=0` in a config) each host is one shard: V = P, the
behaviour before virtual shards, in which a batch depends on the process
count. On one process V = 1 then reproduces batches of runs made before.
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

from alignment import files, sharding, timing
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

  provider: a task or mixture name, or an import directory (`tasks.resolve`).
  kind: "sft" | "pairs" | "prompts" (the converter, see converters.CONVERTERS).
  passthrough: extra task features to keep, {name: FeatureConverter.FeatureSpec};
  their lengths are the response length (scalars ignore it).
  Records keep the task's order. A Mixture is loaded as every example of each of
  its tasks, task after task (seqio's streaming mixture stops at the first
  exhausted task, which would drop examples); its rates must therefore be equal.
  """
  from alignment.data import tasks  # pylint: disable=g-import-not-at-top
  index, count = host_shard(process_index, process_count)
  source = seqio.get_mixture_or_task(tasks.resolve(provider))  # names, import directories
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
  if split not in source.splits:  # e.g. an import (train only) as an evaluation's task
    raise DataStateError(f"{provider}: no split {split!r} (it has {', '.join(source.splits)})")
  cache = _cache_path(source, provider, split, kind, prompt_length, response_length, index,
                      count, seed, passthrough)
  if cache and os.path.exists(cache):
    with np.load(cache) as f:
      return {k: f[k] for k in f.files}
  records = _convert(source, provider, split, kind, prompt_length, response_length, index,
                     count, seed, passthrough)
  if cache:
    files.write_atomic(cache, lambda f: np.savez(f, **records), mode="wb")
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
                window_batches: int = 1, shard: int | None = None) -> np.ndarray:
  """Indices of the records in the given epoch's order (module docstring).

  shard: the virtual shard these records are (its own random stream), or None
  for a host's records without virtual shards.
  """
  if order == "ordered":
    return np.arange(num_records)
  rng = np.random.default_rng([seed, epoch] if shard is None else [seed, shard, epoch])
  if order == "uniform":
    return rng.permutation(num_records)
  if order == "window":
    if window_batches < 1:
      raise ValueError(f"window_batches={window_batches}: must be at least 1")
    size = window_batches * local_batch
    return np.concatenate([start + rng.permutation(min(size, num_records - start))
                           for start in range(0, num_records, size)])
  raise ValueError(f"order={order!r}: use one of {ORDERS}")


def owned_virtual_shards(virtual_shards: int, global_batch_size: int, mesh=None,
                         rules=sharding.DEFAULT_RULES, process_index: int | None = None,
                         process_count: int | None = None, name: str = "") -> list[int]:
  """The virtual shards this host reads: those whose batch rows its devices hold.

  With a mesh (in a real multi-process run) this is read off the batch
  sharding, so any device order works; otherwise (and for simulated hosts)
  it is the contiguous block [h*V/P, (h+1)*V/P).
  """
  index, count = host_shard(process_index, process_count)
  v, b = int(virtual_shards), int(global_batch_size)
  if v < 1 or b % v:
    raise DataStateError(f"{name}: the global batch {b} does not split into "
                         f"data.virtual_shards={v} equal parts; choose a divisor of the batch")
  if v % count:
    raise DataStateError(f"{name}: data.virtual_shards={v} is not a multiple of the {count} "
                         "processes; every process must own whole virtual shards")
  if mesh is None or count != jax.process_count() or count == 1:
    per = v // count
    return list(range(index * per, (index + 1) * per))
  rows_per_shard = b // v
  held = set()
  for idx in sharding.batch_sharding(mesh, rules, 1).addressable_devices_indices_map(
      (b,)).values():
    held.update(range(*idx[0].indices(b)))
  owned = sorted({r // rows_per_shard for r in held})
  for shard in owned:
    if not set(range(shard * rows_per_shard, (shard + 1) * rows_per_shard)) <= held:
      raise DataStateError(f"{name}: the rows of virtual shard {shard} are split between "
                           f"processes by the mesh; use more data.virtual_shards (now {v})")
  return owned


class BatchIterator:
  """Global batches from host-local records; deterministic and checkpointable.

  Yields `batch_cls` instances whose fields are global jax.Arrays with the batch
  sharding of `mesh` (numpy arrays when mesh is None). After each batch,
  `last_indices` holds the host-local record indices it was made of.

  records: this host's records: its virtual shards `shards`, one after the
  other, of `shard_sizes` records each. Without `virtual_shards` the host's
  records are one shard of a P-way split (module docstring).
  """

  def __init__(self, records: Mapping[str, np.ndarray], batch_cls, global_batch_size: int, *,
               mesh=None, rules=sharding.DEFAULT_RULES, seed: int = 0, order: str = "uniform",
               window_batches: int = 1, num_epochs: int | None = None,
               process_count: int | None = None, name: str = "",
               virtual_shards: int | None = None, shards=None, shard_sizes=None):
    self.records = dict(records)
    self.batch_cls = batch_cls
    self.fields = tuple(batch_cls.__dataclass_fields__)
    missing = [f for f in self.fields if f not in self.records]
    if missing:
      raise DataStateError(f"{name}: records lack {missing} needed by {batch_cls.__name__}")
    self.num_records = len(self.records[self.fields[0]])
    index, self.process_count = host_shard(None, process_count)
    if global_batch_size % self.process_count:
      raise DataStateError(f"{name}: global batch {global_batch_size} does not split over "
                           f"{self.process_count} hosts")
    self.global_batch_size = global_batch_size
    self.legacy = virtual_shards is None  # one shard per host: batches depend on P
    if self.legacy:
      self.virtual_shards, self.shards = self.process_count, [index]
    else:
      self.virtual_shards = int(virtual_shards)
      self.shards = list(shards) if shards is not None else owned_virtual_shards(
          self.virtual_shards, global_batch_size, process_count=process_count, name=name)
      if global_batch_size % self.virtual_shards:
        raise DataStateError(f"{name}: the global batch {global_batch_size} does not split "
                             f"into data.virtual_shards={self.virtual_shards} equal parts")
    sizes = [self.num_records] if shard_sizes is None and len(self.shards) == 1 else shard_sizes
    if sizes is None or len(sizes) != len(self.shards) or sum(sizes) != self.num_records:
      raise DataStateError(f"{name}: shard_sizes {shard_sizes} do not describe the "
                           f"{self.num_records} records of virtual shards {self.shards}")
    self.shard_sizes = [int(n) for n in sizes]
    self.offsets = np.concatenate([[0], np.cumsum(self.shard_sizes)[:-1]]).astype(int)
    self.rows_per_shard = global_batch_size // self.virtual_shards
    self.local_batch = self.rows_per_shard * len(self.shards)
    self.shard_batches = [n // self.rows_per_shard for n in self.shard_sizes]
    if min(self.shard_batches) == 0:
      small = self.shards[int(np.argmin(self.shard_batches))]
      raise DataStateError(
          f"{name}: {min(self.shard_sizes)} records in "
          f"{'this host' if self.legacy else f'virtual shard {small}'}, fewer than one "
          f"local batch of {self.rows_per_shard}")
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
    self._shard_info = self._all_shard_info(process_count)
    self.batches_per_epoch = min(n for n, _ in self._shard_info.values()) // self.rows_per_shard
    self.batch = 0  # global batches drawn so far
    self._orders: dict[int, tuple[int, np.ndarray]] = {}
    self.last_indices = None

  def _all_shard_info(self, process_count) -> dict[int, tuple[int, int]]:
    """{virtual shard: (records, fingerprint)}: this host's, or every host's when
    several processes really run (gathered once, so every host's state is whole)."""
    mine = {}
    for v, start, n in zip(self.shards, self.offsets, self.shard_sizes):
      mine[v] = (n, fingerprint({f: self.records[f][start:start + n] for f in self.fields}))
    if self.legacy or jax.process_count() == 1 or process_count not in (
        None, jax.process_count()):
      return mine
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    table = np.full((self.virtual_shards, 3), -1, np.int32)  # JAX gathers 32-bit ints
    for v, (n, crc) in mine.items():
      table[v] = (n, crc >> 16, crc & 0xFFFF)
    gathered = np.asarray(multihost_utils.process_allgather(table)).max(axis=0)
    return {v: (int(n), (int(hi) << 16) | int(lo)) for v, (n, hi, lo) in enumerate(gathered)
            if n >= 0}

  # -- state

  @property
  def epoch(self) -> int:
    """Epochs completed by the smallest virtual shard (shards have their own epochs)."""
    return self.batch // self.batches_per_epoch

  def get_state(self) -> dict:
    """A small JSON-able dict, the same on every host; save it with the train state."""
    return {"name": self.name, "batch": self.batch, "epoch": self.epoch, "seed": self.seed,
            "order": self.order, "window_batches": self.window_batches,
            "global_batch_size": self.global_batch_size,
            "virtual_shards": None if self.legacy else self.virtual_shards,
            "process_count": self.process_count,
            "shards": {str(v): [n, crc] for v, (n, crc) in sorted(self._shard_info.items())}}

  def set_state(self, state: Mapping[str, Any]) -> None:
    """Resumes where `state` was taken; refuses state saved for other data or settings."""
    mine = self.get_state()
    keys = ("seed", "order", "window_batches", "global_batch_size", "virtual_shards")
    if self.legacy:
      keys += ("process_count",)
    for key in keys:
      if state.get(key) != mine[key]:
        raise DataStateError(
            f"data iterator {self.name!r}: the saved state has {key}={state.get(key)!r} but "
            f"this run has {mine[key]!r}; the restored input would not continue the run")
    saved = state.get("shards") or {}
    for v, (n, crc) in mine["shards"].items():
      if v in saved and list(saved[v]) != [n, crc]:
        raise DataStateError(
            f"data iterator {self.name!r}: virtual shard {v} was saved with {saved[v][0]} "
            f"records of fingerprint {saved[v][1]}, but this run reads {n} records of "
            f"fingerprint {crc}; the data changed")
    batch = int(state["batch"])
    if "shards" not in state:  # written before virtual shards: (epoch, batch within it)
      if not self.legacy or (state.get("num_records"), state.get("fingerprint")) != (
          self.num_records, self._shard_info[self.shards[0]][1]):
        raise DataStateError(f"data iterator {self.name!r}: the saved state predates virtual "
                             "shards or was taken on other data (fingerprint differs); start "
                             "the run in a new --workdir")
      batch += int(state.get("epoch", 0)) * self.batches_per_epoch
    if batch < 0:
      raise DataStateError(f"data iterator {self.name!r}: saved position batch={batch} < 0")
    self.batch = batch

  # -- iteration

  def __iter__(self):
    return self

  def _shard_rows(self, i: int) -> np.ndarray:
    """Host-local indices of the rows virtual shard i (of this host) gives the batch."""
    v, per = self.shards[i], self.rows_per_shard
    epoch, b = divmod(self.batch, self.shard_batches[i])
    cached = self._orders.get(i)
    if cached is None or cached[0] != epoch:
      cached = (epoch, epoch_order(self.shard_sizes[i], per, self.order, self.seed, epoch,
                                   self.window_batches, None if self.legacy else v))
      self._orders[i] = cached
    return self.offsets[i] + cached[1][b * per:(b + 1) * per]

  def next_local(self):
    """The next batch as this host's numpy rows (advances the iterator)."""
    if self.num_epochs is not None and self.batch >= self.num_epochs * self.batches_per_epoch:
      raise StopIteration
    idx = np.concatenate([self._shard_rows(i) for i in range(len(self.shards))])
    self.batch += 1
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


@timing.timed("data")
def make_iterator(provider: str, split: str, kind: str, global_batch_size: int, *,
                  prompt_length: int = 64, response_length: int = 32, mesh=None,
                  rules=sharding.DEFAULT_RULES, seed: int = 0, order: str = "uniform",
                  window_batches: int = 1, num_epochs: int | None = None,
                  process_index: int | None = None,
                  process_count: int | None = None,
                  max_records: int | None = None,
                  virtual_shards: int | None = None) -> BatchIterator:
  """The iterator a training loop uses, e.g. ("env_sft", "train", "sft", 32, mesh=mesh).

  virtual_shards: V (module docstring); this host reads only its virtual
  shards. None: one shard per host (batches then depend on the process count).
  max_records: keep only N records in all (each virtual shard its first N / V,
  or each host its first N / hosts): a limited D_golden.
  """
  name = f"{provider}/{split}"
  batch_cls = converters.CONVERTERS[kind].BATCH_CLS
  common = dict(mesh=mesh, rules=rules, seed=seed, order=order, window_batches=window_batches,
                num_epochs=num_epochs, process_count=process_count, name=name)
  if virtual_shards is None:
    records = load_records(provider, split, kind, prompt_length, response_length,
                           process_index=process_index, process_count=process_count, seed=seed)
    if max_records:
      per_host = max_records // host_shard(process_index, process_count)[1]
      records = {k: v[:per_host] for k, v in records.items()}
    return BatchIterator(records, batch_cls, global_batch_size, **common)
  shards = owned_virtual_shards(virtual_shards, global_batch_size, mesh, rules, process_index,
                                process_count, name)
  parts = []
  for v in shards:
    part = load_records(provider, split, kind, prompt_length, response_length,
                        process_index=v, process_count=virtual_shards, seed=seed)
    if max_records:
      part = {k: a[:max_records // virtual_shards] for k, a in part.items()}
    parts.append(part)
  records = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
  return BatchIterator(records, batch_cls, global_batch_size, virtual_shards=virtual_shards,
                       shards=shards, shard_sizes=[len(p[next(iter(p))]) for p in parts],
                       **common)


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
