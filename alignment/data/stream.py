"""D_online: the online stream, written as it is made, replayed offline exactly.

The paper's coverage test (docs/paper.md, finding 2) saves what an online run
trained on and replays it offline: in its original order (which should
reproduce the online run, the "tandem effect"), uniformly shuffled, and
shuffled within windows of k batches. This module is the writer and the reader.

Writer (`StreamWriter`, one per host). Each call to `write(step, ...)` takes
this host's rows of one online batch: prompt [b, Lp] (left padded), both
sampled responses [b, Lr] (right padded), their masks, the proxy verdict (1
where response_1 won), optionally the proxy's probability and any float
extras (e.g. golden scores, log-probs). Rows are records keyed by (step,
position in the global batch). `flush()` writes what is pending as one chunk,
`chunk-<first step>-<last step>-h<host>-<sha256>.tfrecord`, to a temporary name
first and renames it, so a crash leaves whole chunks only, and a failed write
(a full disk) leaves none: its temporary file is removed; the loop flushes when
it checkpoints. Resuming from a checkpoint at step s, `StreamWriter(...,
resume_step=s)` cuts this host's chunks back to steps < s, so the replayed
stream is the one the resumed run trains on.

Checksums. A chunk's name carries the sha256 of its bytes, computed when it is
written (the rename that commits it commits its checksum too; hosts never share
an index file), and stream.json carries the sha256 of its own settings. Every
read (`read_stream`, the replays, `register_stream`, a writer cutting a chunk
back) checks them first: a truncated or altered chunk is refused with one line
naming the file and, where TFRecord's own framing finds it, the damaged record.
Streams written before checksums (chunk names without one, stream.json without
"checksum") are read with a one-line warning that they are unverified;
regenerate them to have them checked.

Reader (`read_stream`, `replay_iterator`). Records are read back with exactly
the arrays that were written (padded ids and masks are stored whole), sorted
by (step, position), checked for gaps, and turned into PreferenceBatch rows
(chosen = the proxy's winner). The iterator is `pipeline.BatchIterator` with
order "ordered" (batch t == online step t, bit for bit, when the replay batch
size is the written one), "uniform", or "window" (`window_batches` = k);
orders are reproducible from the seed and the state is checkpointable like
any other input. With `virtual_shards` = V (the loops pass
`data.virtual_shards`), virtual shard v of a stream is the positions
[v * B/V, (v + 1) * B/V) of every step, and a host replays only the virtual
shards it owns (`pipeline.owned_virtual_shards`): the replayed batches are the
same for any process count dividing V, and shuffles move a row only within its
virtual shard's positions. Without it, host h replays the positions
[h * B/P, (h + 1) * B/P) (one shard per host).

Writers on several hosts: each host writes its own rows, with their positions
in the global batch (`write(..., positions=)`, default the host's contiguous
slice), into its own chunks (`-h<host>`). A run resumed on another number of
hosts cuts back every old host's chunks (host h those of old hosts h' with
h' mod P = h), so the stream stays whole and gap-free.

The online loop writes through `OnlineWriter`: one `write` per step of the
judged pairs (`SampledPairs` and the verdict), each process its own rows at their
global positions, the step the samples were drawn at as the extra
"sampling_step", flushed whenever the loop checkpoints.

`register_stream(directory)` also exposes a stream as a seqio Task ({prompt,
chosen, rejected} with the padding removed, plus step and position), in file
order, for tools that speak seqio; exact order is the reader's job.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
from typing import Mapping

import numpy as np

from alignment import distributed, faults, files, sharding
from alignment.data import batches
from alignment.data import pipeline
from alignment.data.tf_setup import tf
from alignment.data.tfrecords import damaged_record

META = "stream.json"
FORMAT = 1
# The checksum group is absent in streams written before checksums.
_CHUNK = re.compile(r"^chunk-(\d{9})-(\d{9})-h(\d{4})(?:-([0-9a-f]{64}))?\.tfrecord$")
log = logging.getLogger("alignment")
_ARRAYS = ("prompt", "prompt_mask", "response_1", "response_1_mask", "response_2",
           "response_2_mask")


class StreamError(ValueError):
  pass


def _meta_checksum(meta: dict) -> str:
  body = {k: v for k, v in meta.items() if k != "checksum"}
  return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def verify_chunk(path: str) -> bool:
  """Checks a chunk against the checksum in its name; False if it has none (an older
  stream). Raises StreamError naming the file (and record) when it does not match."""
  m = _CHUNK.match(os.path.basename(path))
  if not m or not m.group(4):
    return False
  if files.sha256(path) != m.group(4):
    raise StreamError(f"{path}: contents do not match the checksum in its name"
                      f"{damaged_record(path)}: the file was truncated or altered; "
                      "regenerate the stream")
  return True


def _int_feature(values) -> tf.train.Feature:
  return tf.train.Feature(int64_list=tf.train.Int64List(value=np.asarray(values).ravel()))


def _float_feature(values) -> tf.train.Feature:
  return tf.train.Feature(float_list=tf.train.FloatList(value=np.asarray(values).ravel()))


class StreamWriter:
  """Writes this host's rows of every online batch; see the module docstring."""

  def __init__(self, directory: str, *, global_batch_size: int, prompt_length: int,
               response_length: int, vocab: str = "sentencepiece",
               extras: tuple[str, ...] = (), process_index: int | None = None,
               process_count: int | None = None, resume_step: int | None = None):
    self.directory = directory
    self.host, self.hosts = pipeline.host_shard(process_index, process_count)
    if global_batch_size % self.hosts:
      raise StreamError(f"global batch {global_batch_size} does not split over {self.hosts} hosts")
    self.meta = {"format": FORMAT, "global_batch_size": int(global_batch_size),
                 "prompt_length": int(prompt_length), "response_length": int(response_length),
                 "vocab": vocab, "extras": sorted(extras)}
    self.local_batch = global_batch_size // self.hosts
    tf.io.gfile.makedirs(directory)
    meta_path = os.path.join(directory, META)
    if tf.io.gfile.exists(meta_path):
      old = read_meta(directory)
      old.pop("process_count", None)  # older streams recorded it; any count may resume
      old.pop("checksum", None)
      if old != self.meta:
        raise StreamError(f"{meta_path}: the stream there was written with {old}, not "
                          f"{self.meta}; use another directory")
    elif self.host == 0:
      files.write_json(meta_path, dict(self.meta, checksum=_meta_checksum(self.meta)))
    self._pending: list[bytes] = []
    self._steps: list[int] = []
    self._last_step = None
    self._cut_back(resume_step)

  def _my_chunks(self) -> list[tuple[str, int, int]]:
    out = []
    for name in sorted(tf.io.gfile.listdir(self.directory)):
      m = _CHUNK.match(name)
      if m and int(m.group(3)) % self.hosts == self.host:  # also old hosts of a larger run
        out.append((os.path.join(self.directory, name), int(m.group(1)), int(m.group(2)),
                    int(m.group(3))))
      elif name.startswith("chunk-") and ".tmp-" in name and f"-h{self.host:04d}" in name:
        tf.io.gfile.remove(os.path.join(self.directory, name))  # a crash's leftover
    return out

  def _cut_back(self, resume_step: int | None) -> None:
    chunks = self._my_chunks()
    if resume_step is None:
      if chunks:
        raise StreamError(f"{self.directory}: holds a stream already; pass resume_step to "
                          f"continue it, or use another directory")
      return
    for path, first, last, host in chunks:
      if first >= resume_step:
        tf.io.gfile.remove(path)
      elif last >= resume_step:
        verify_chunk(path)  # never re-commit damaged rows under a fresh checksum
        keep = [r for r in tf.data.TFRecordDataset(path).as_numpy_iterator()
                if tf.train.Example.FromString(r).features.feature["step"].int64_list.value[0]
                < resume_step]
        # The cut chunk is committed before the old one goes: a crash between the two
        # leaves rows twice (cut back again on the next resume), never a gap.
        if self._write_chunk(keep, first, resume_step - 1, host) != path:
          tf.io.gfile.remove(path)

  def _write_chunk(self, records: list[bytes], first: int, last: int,
                   host: int | None = None) -> str:
    host = self.host if host is None else host
    stem = os.path.join(self.directory, f"chunk-{first:09d}-{last:09d}-h{host:04d}")
    tmp = f"{stem}.tfrecord.tmp-{os.getpid()}"
    try:
      with tf.io.TFRecordWriter(tmp) as w:
        for r in records:
          w.write(r)
        faults.hit("stream", first, path=tmp)
      path = f"{stem}-{files.sha256(tmp)}.tfrecord"
      tf.io.gfile.rename(tmp, path, overwrite=True)
    except BaseException:  # a full disk: no partial chunk stays behind
      if tf.io.gfile.exists(tmp):
        tf.io.gfile.remove(tmp)
      raise
    return path

  def write(self, step: int, prompt, prompt_mask, response_1, response_1_mask, response_2,
            response_2_mask, verdict, proxy_prob=None,
            extras: Mapping[str, np.ndarray] | None = None, positions=None) -> None:
    """Adds this host's rows of the batch of `step` (arrays [b, ...], b = local batch).

    positions: each row's index in the global batch (default: the host's
    contiguous slice, host * b + i).
    """
    step = int(step)
    if self._last_step is not None and step <= self._last_step:
      raise StreamError(f"step {step} written after step {self._last_step}")
    arrays = dict(zip(_ARRAYS, (prompt, prompt_mask, response_1, response_1_mask, response_2,
                                response_2_mask)))
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    lengths = {"prompt": self.meta["prompt_length"], "response": self.meta["response_length"]}
    for k, a in arrays.items():
      want = (self.local_batch, lengths["prompt" if k.startswith("prompt") else "response"])
      if a.shape != want:
        raise StreamError(f"step {step}: {k} has shape {a.shape}, expected {want}")
    verdict = np.asarray(verdict).reshape(-1)
    prob = (np.full(self.local_batch, np.nan, np.float32) if proxy_prob is None
            else np.asarray(proxy_prob, np.float32).reshape(-1))
    extras = {k: np.asarray(v, np.float32).reshape(-1) for k, v in (extras or {}).items()}
    positions = (self.host * self.local_batch + np.arange(self.local_batch) if positions is None
                 else np.asarray(positions).reshape(-1))
    if len(positions) != self.local_batch:
      raise StreamError(f"step {step}: {len(positions)} positions for {self.local_batch} rows")
    if sorted(extras) != self.meta["extras"]:
      raise StreamError(f"step {step}: extras {sorted(extras)}, declared {self.meta['extras']}")
    for r in range(self.local_batch):
      feats = {k: _int_feature(a[r]) for k, a in arrays.items()}
      feats["step"] = _int_feature([step])
      feats["position"] = _int_feature([int(positions[r])])
      feats["verdict"] = _int_feature([int(verdict[r])])
      feats["proxy_prob"] = _float_feature([prob[r]])
      for k, v in extras.items():
        feats["extra/" + k] = _float_feature([v[r]])
      self._pending.append(
          tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString())
    self._steps.append(step)
    self._last_step = step

  def flush(self) -> str | None:
    """Writes the pending steps as one chunk (atomically); returns its path."""
    if not self._pending:
      return None
    path = self._write_chunk(self._pending, self._steps[0], self._steps[-1])
    self._pending, self._steps = [], []
    return path

  def close(self) -> None:
    self.flush()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


class OnlineWriter:
  """D_online as the online loop writes it: each step's judged pairs, one call a step.

  Each process writes the rows of the global arrays it holds, at their positions in
  the global batch; the extra "sampling_step" records the step whose parameters
  drew the samples (`rl.staleness`). `write(..., flush=True)` where the loop saves a
  checkpoint, so the stream never runs ahead of the checkpoint it resumes from
  (and `resume_step` cuts it back to that checkpoint).
  """

  def __init__(self, directory: str, *, global_batch_size: int, prompt_length: int,
               response_length: int, vocab: str, resume_step: int):
    self.writer = StreamWriter(directory, global_batch_size=global_batch_size,
                               prompt_length=prompt_length, response_length=response_length,
                               vocab=vocab, extras=("sampling_step",), resume_step=resume_step)

  def write(self, step: int, sampled: batches.SampledPairs, first_wins, prob_first,
            sampling_step: int, flush: bool) -> None:
    """Step `step`'s pairs and verdicts (global arrays [B, ...]), then a flush if asked."""
    rows = {f.name: distributed.local_rows(getattr(sampled, f.name))
            for f in dataclasses.fields(sampled)}
    self.writer.write(step, **rows,
                      verdict=np.asarray(distributed.local_rows(first_wins)).astype(np.int32),
                      proxy_prob=np.asarray(distributed.local_rows(prob_first), np.float32),
                      extras={"sampling_step": np.full(len(rows["prompt"]), sampling_step)},
                      positions=distributed.local_row_indices(sampled.response_1))
    if flush:
      self.writer.flush()

  def close(self) -> None:
    self.writer.flush()


def read_meta(directory: str) -> dict:
  """stream.json, checked against the checksum it carries (if it has one)."""
  path = os.path.join(directory, META)
  if not tf.io.gfile.exists(path):
    raise StreamError(f"{directory}: no {META}; not a stream written by StreamWriter")
  with tf.io.gfile.GFile(path) as f:
    text = f.read()
  try:
    meta = json.loads(text)
  except json.JSONDecodeError as e:
    raise StreamError(f"{path}: not JSON ({e.msg} at line {e.lineno}): the file was "
                      "truncated or altered; regenerate the stream") from None
  if "checksum" in meta and meta["checksum"] != _meta_checksum(meta):
    raise StreamError(f"{path}: contents do not match the checksum they carry: the file "
                      "was altered; regenerate the stream")
  return meta


def verify(directory: str) -> list[str]:
  """Checks stream.json and every chunk; returns the chunk files, in name order.
  Warns once about a stream (or chunks) written before checksums."""
  meta = read_meta(directory)
  chunks = chunk_files(directory)
  unchecked = [p for p in chunks if not verify_chunk(p)]
  if unchecked or "checksum" not in meta:
    log.warning("%s: %s written before streams carried checksums: read unverified "
                "(regenerate the stream to have it checked)", directory,
                f"{len(unchecked)} of {len(chunks)} chunks" if unchecked else META)
  return chunks


def _feature_spec(meta: dict) -> dict:
  lp, lr = meta["prompt_length"], meta["response_length"]
  spec = {k: tf.io.FixedLenFeature([lp if k.startswith("prompt") else lr], tf.int64)
          for k in _ARRAYS}
  spec.update({k: tf.io.FixedLenFeature([], tf.int64) for k in ("step", "position", "verdict")})
  spec["proxy_prob"] = tf.io.FixedLenFeature([], tf.float32)
  spec.update({"extra/" + k: tf.io.FixedLenFeature([], tf.float32) for k in meta["extras"]})
  return spec


def chunk_files(directory: str) -> list[str]:
  return [os.path.join(directory, n) for n in sorted(tf.io.gfile.listdir(directory))
          if _CHUNK.match(n)]


def read_stream(directory: str, *, process_index: int | None = None,
                process_count: int | None = None, virtual_shards: int | None = None,
                shards=None) -> dict[str, np.ndarray]:
  """This host's rows of the stream as PreferenceBatch records.

  Without virtual shards: the host's slice of positions, sorted by (step,
  position). With `virtual_shards` = V: the virtual shards `shards` (default
  the host's contiguous block), one after the other, each sorted by (step,
  position); the shards' sizes are equal.
  Keys: the PreferenceBatch fields (chosen = the proxy's winner), the written
  arrays (response_1, ...), step, position, verdict, proxy_prob, extra/<name>.
  """
  meta = read_meta(directory)
  index, count = pipeline.host_shard(process_index, process_count)
  b = meta["global_batch_size"]
  if virtual_shards is None:
    if b % count:
      raise StreamError(f"{directory}: batch {b} does not split over {count} hosts")
    per, blocks = b // count, [index]
  else:
    if b % virtual_shards:
      raise StreamError(f"{directory}: the written batch {b} does not split into "
                        f"data.virtual_shards={virtual_shards} equal parts")
    per = b // virtual_shards
    blocks = list(shards) if shards is not None else pipeline.owned_virtual_shards(
        virtual_shards, b, process_index=process_index, process_count=process_count,
        name=directory)
  chunks = verify(directory)
  if not chunks:
    raise StreamError(f"{directory}: no chunks")
  spec = _feature_spec(meta)
  parts = []
  for path in chunks:  # one file at a time, so a damaged one is named
    ds = tf.data.TFRecordDataset(path).batch(4096).map(lambda x: tf.io.parse_example(x, spec))
    try:
      parts += list(ds.as_numpy_iterator())
    except tf.errors.DataLossError:
      raise StreamError(f"{path}: damaged{damaged_record(path)}; regenerate the "
                        "stream") from None
  rec = {k: np.concatenate([p[k] for p in parts]) for k in spec}
  block = rec["position"] // per
  rank = {v: i for i, v in enumerate(blocks)}
  mine = np.isin(block, blocks)
  rec = {k: v[mine] for k, v in rec.items()}
  block_rank = np.asarray([rank[v] for v in block[mine]], np.int64)
  order = np.lexsort((rec["position"], rec["step"], block_rank))
  rec = {k: v[order] for k, v in rec.items()}
  steps = np.unique(rec["step"])
  want = np.concatenate([np.tile(np.arange(v * per, (v + 1) * per), len(steps))
                         for v in blocks])
  local = per * len(blocks)
  if len(rec["step"]) != len(want) or (rec["position"] != want).any():
    counts = {int(s): int((rec["step"] == s).sum()) for s in steps}
    bad = next(s for s, n in counts.items() if n != local) if any(
        n != local for n in counts.values()) else int(steps[0])
    where = ", ".join(f"{v * per}..{(v + 1) * per - 1}" for v in blocks)
    raise StreamError(f"{directory}: step {bad} has {counts.get(bad)} rows for host {index}, "
                      f"expected positions {where} once each")
  if len(steps) and steps[-1] - steps[0] + 1 != len(steps):
    gap = next(int(s) + 1 for s, t in zip(steps[:-1], steps[1:]) if t != s + 1)
    raise StreamError(f"{directory}: step {gap} is missing (a chunk was lost?)")
  for k in _ARRAYS + ("step", "position", "verdict"):
    rec[k] = rec[k].astype(np.int32)
  win = rec["verdict"].astype(bool)[:, None]
  rec["chosen"] = np.where(win, rec["response_1"], rec["response_2"])
  rec["chosen_mask"] = np.where(win, rec["response_1_mask"], rec["response_2_mask"])
  rec["rejected"] = np.where(win, rec["response_2"], rec["response_1"])
  rec["rejected_mask"] = np.where(win, rec["response_2_mask"], rec["response_1_mask"])
  return rec


def fixed_pairs(directory: str, num: int) -> batches.PreferenceBatch:
  """The first `num` pairs of a stream (by step, then position) as one numpy batch,
  the same on every host (held-out evaluation pairs)."""
  rec = read_stream(directory, process_index=0, process_count=1)
  have = len(rec["step"])
  if have < num:
    raise StreamError(f"{directory}: {have} pairs, {num} requested")
  return batches.PreferenceBatch(**{f: rec[f][:num] for f in
                                    batches.PreferenceBatch.__dataclass_fields__})


def replay_iterator(directory: str, *, order: str = "ordered", window_batches: int = 1,
                    seed: int = 0, global_batch_size: int | None = None, mesh=None,
                    rules=sharding.DEFAULT_RULES, num_epochs: int | None = None,
                    process_index: int | None = None,
                    process_count: int | None = None,
                    virtual_shards: int | None = None) -> pipeline.BatchIterator:
  """D_online as PreferenceBatches: ordered, uniformly shuffled or window-shuffled.

  virtual_shards: V (module docstring): replayed batches do not depend on the
  process count, and each host reads its own virtual shards' positions.
  """
  meta = read_meta(directory)
  batch = global_batch_size or meta["global_batch_size"]
  name = f"stream:{directory}"
  shards = None
  if virtual_shards is not None:
    shards = pipeline.owned_virtual_shards(virtual_shards, batch, mesh, rules, process_index,
                                           process_count, name)
  records = read_stream(directory, process_index=process_index, process_count=process_count,
                        virtual_shards=virtual_shards, shards=shards)
  sizes = None if shards is None else [len(records["step"]) // len(shards)] * len(shards)
  return pipeline.BatchIterator(
      records, batches.PreferenceBatch, batch,
      mesh=mesh, rules=rules, seed=seed, order=order, window_batches=window_batches,
      num_epochs=num_epochs, process_count=process_count, name=name,
      virtual_shards=virtual_shards, shards=shards, shard_sizes=sizes)


def register_stream(directory: str, name: str | None = None) -> str:
  """A seqio Task over the stream's chunks (file order); returns its name."""
  import seqio  # pylint: disable=g-import-not-at-top
  from alignment.data import tasks  # pylint: disable=g-import-not-at-top
  from alignment.data import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  meta = read_meta(directory)
  verify(directory)
  name = name or "stream_" + re.sub(r"[^0-9a-zA-Z_]", "_", os.path.basename(
      os.path.normpath(directory)))
  spec = _feature_spec(meta)

  def to_pairs(ds):
    def convert(ex):
      win = tf.cast(ex["verdict"], tf.bool)
      y1 = tf.boolean_mask(ex["response_1"], ex["response_1_mask"] > 0)
      y2 = tf.boolean_mask(ex["response_2"], ex["response_2_mask"] > 0)
      return {"prompt": tf.cast(tf.boolean_mask(ex["prompt"], ex["prompt_mask"] > 0), tf.int32),
              "chosen": tf.cast(tf.cond(win, lambda: y1, lambda: y2), tf.int32),
              "rejected": tf.cast(tf.cond(win, lambda: y2, lambda: y1), tf.int32),
              "step": ex["step"], "position": ex["position"]}
    return ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

  vocab = vocab_lib.get_vocabulary(meta["vocab"])
  source = seqio.TFExampleDataSource(
      {"train": os.path.join(directory, "chunk-*.tfrecord")}, spec, cycle_length=1)
  return tasks._replace_task(  # pylint: disable=protected-access
      name, source=source, preprocessors=[to_pairs],
      output_features=tasks.features(vocab, {"prompt": False, "chosen": False,
                                              "rejected": False}))
