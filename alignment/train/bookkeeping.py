"""The bookkeeping around a loop's step, the same for every loop.

- `Run`: per step, the metrics to host, the NaN/Inf guard, timing, the log,
  checkpoints and the SIGTERM stop; `end_of_step` returns True when the loop
  must stop.
- `RunLog`: metrics to <workdir>/metrics.jsonl, TensorBoard (<workdir>/tb,
  `ScalarEvents`) and a console progress line; on resume it drops records past
  the restored step, so the file equals an uninterrupted run's.
- `Preemption`: SIGTERM sets a flag the loop polls; the loop then saves a
  checkpoint and exits cleanly.
- `check_finite`: names the step and the quantities that are NaN or Inf.
"""
from __future__ import annotations

import json
import logging
import math
import os
import signal
import struct
import sys
import time
from typing import Callable, Mapping, Optional

import jax
from etils import epath

from alignment import distributed, faults, files, layout, timing

log = logging.getLogger("alignment")


class NonFiniteError(RuntimeError):
  """A NaN/Inf appeared: names the step and the quantities."""


def check_finite(step: int, metrics: Mapping[str, float], watch=None) -> None:
  """Raises NonFiniteError naming the step and the non-finite quantities."""
  names = [k for k, v in metrics.items()
           if (watch is None or k in watch) and not math.isfinite(v)]
  if names:
    raise NonFiniteError(f"step {step}: non-finite {', '.join(sorted(names))} "
                         f"({', '.join(f'{k}={metrics[k]}' for k in sorted(names))}); "
                         "the last good checkpoint is intact")


_PREEMPTED = [False]  # a loop of this process caught a SIGTERM (the study stops after it)


def preempted() -> bool:
  """Whether a loop of this process stopped early after a SIGTERM."""
  return _PREEMPTED[0]


class Preemption:
  """SIGTERM (a TPU VM preemption notice) -> `requested` becomes True."""

  def __init__(self):
    self.requested = False
    self._previous = None
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread (e.g. inside some test runners)
      self._previous = None

  def _handle(self, signum, frame):
    del signum, frame
    log.warning("SIGTERM received: saving a checkpoint and stopping")
    self.requested = True
    _PREEMPTED[0] = True

  def close(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


class ScalarEvents:
  """TensorBoard scalars, the events `tf.summary.scalar` writes: one Event per value
  (wall time, step, the tag, a float32 scalar tensor, plugin "scalars"), in an
  events.out.tfevents.*.v2 file, written through tensorboard's EventFileWriter.

  clu's TF SummaryWriter runs TensorFlow ops for each value, about 0.25 ms a
  scalar on a CPU (a few ms a step of a loop that logs ~20 values, the bulk of
  the bookkeeping per step); these protos cost a tenth of that. As TF's writer
  does, events reach the file at least every 10 s and at `close`.
  """

  def __init__(self, logdir: str):
    # pylint: disable=g-import-not-at-top
    from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, types_pb2
    from tensorboard.summary.writer import event_file_writer
    self._event, self._tensor, self._float = event_pb2.Event, tensor_pb2.TensorProto, \
        types_pb2.DT_FLOAT
    self._metadata = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
    self._file = event_file_writer.EventFileWriter(logdir, flush_secs=10,
                                                   filename_suffix=".v2")

  def write_scalars(self, step: int, scalars: Mapping[str, float]):
    for tag, value in scalars.items():
      event = self._event(wall_time=time.time(), step=int(step))
      event.summary.value.add(tag=tag, metadata=self._metadata, tensor=self._tensor(
          dtype=self._float, tensor_shape={}, tensor_content=struct.pack("<f", value)))
      self._file.add_event(event)

  def flush(self):
    self._file.flush()

  def close(self):
    self._file.close()


class RunLog:
  """Metrics sink: JSONL + TensorBoard + console progress (process 0 only)."""

  def __init__(self, workdir: str, total_steps: int, resume_step: int = 0,
               every: int = 10, name: str = ""):
    self.workdir = workdir
    self.total = total_steps
    self.every = max(1, every)
    self.name = name
    self.main = jax.process_index() == 0
    self.path = layout.metrics(workdir)  # a local path or gs://...
    self._t0 = time.time()
    self._s0 = resume_step
    self._writer = None
    if self.main:
      epath.Path(workdir).mkdir(parents=True, exist_ok=True)
      self._truncate(resume_step)
      from clu import metric_writers  # pylint: disable=g-import-not-at-top
      # clu's default writer (asynchronous=False) less its TF SummaryWriter, whose
      # events ScalarEvents writes without a TensorFlow op per value.
      self._writer = metric_writers.MultiWriter([
          metric_writers.LoggingWriter(), ScalarEvents(layout.tensorboard(workdir))])

  def _truncate(self, step: int):
    """Keeps only records up to `step` (those of the checkpoint we resume from)."""
    if not epath.Path(self.path).exists():
      return
    keep = [r for r in files.read_jsonl(self.path) if r.get("step", 0) <= step]
    files.write_text(self.path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in keep))

  def write(self, step: int, metrics: Mapping[str, float], console: Optional[bool] = None):
    if not self.main:
      return
    record = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
    self._append(json.dumps(record, sort_keys=True) + "\n")
    self._writer.write_scalars(int(step), {k: v for k, v in record.items() if k != "step"})
    if console if console is not None else (step % self.every == 0 or step == self.total):
      self._console(step, metrics)

  def _append(self, line: str):
    if "://" not in self.path:
      with open(self.path, "ab", buffering=0) as f:  # unbuffered: a failed write is undone
        size = f.seek(0, os.SEEK_END)
        data = memoryview(line.encode())
        try:
          while data:
            data = data[f.write(data):]
            faults.hit("metrics", "", path=self.path)
        except OSError:  # a full disk: no torn record for the next start to trip on
          f.truncate(size)
          raise
      return
    path = epath.Path(self.path)  # object stores cannot append: rewrite (small file)
    path.write_text((path.read_text() if path.exists() else "") + line)

  def _console(self, step, metrics):
    done = step - self._s0
    elapsed = time.time() - self._t0
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = (self.total - step) / rate if rate > 0 else float("nan")
    shown = " ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())[:10])
    pct = 100.0 * step / max(self.total, 1)
    print(f"[{self.name}] step {step}/{self.total} ({pct:.0f}%) {rate:.2f} steps/s "
          f"eta {eta:.0f}s | {shown}", file=sys.stderr, flush=True)

  def close(self):
    if self._writer is not None:
      self._writer.flush()
      self._writer.close()


class Run:
  """The bookkeeping around a loop's step: timing, logging, NaN/Inf, checkpoints, SIGTERM.

      run = Run(config.train, workdir, ckpt, start_step, name="sft", meta=meta)
      for step in range(start_step, config.train.num_steps):
        state, metrics = train_step(state, next(data))
        if run.end_of_step(step + 1, state, metrics, data.get_state()):
          break
      run.close(state, data.get_state())

  `end_of_step` returns True when the loop must stop (preemption). A watched
  non-finite metric raises NonFiniteError (train.on_nonfinite="stop")
  before anything is saved, or is counted as a skipped batch ("skip"; the
  step has already left the state unchanged).
  """

  def __init__(self, train_cfg, workdir: str, ckpt, start_step: int, name: str, meta: dict,
               watch=("loss", "grad_norm")):
    self.train_cfg = train_cfg  # the `train` section
    self.ckpt = ckpt
    self.meta = meta
    self.total = int(train_cfg.num_steps)
    self.watch = tuple(watch)
    self.log = RunLog(workdir, self.total, start_step, train_cfg.log_every, name)
    self.preemption = Preemption()
    self.skipped = 0
    self._last = time.perf_counter()
    self._clock = timing.StepClock()  # the study's split of a stage's time
    self.last_metrics: dict[str, float] = {}
    self.stopped_early = False
    distributed.note_progress(start_step, ckpt.newest_complete_step)

  def end_of_step(self, step: int, state, metrics, data_state: dict,
                  extra: Optional[Mapping[str, float]] = None,
                  history: Optional[Callable[[], tuple]] = None) -> bool:
    """Logs step `step`, checks it, saves its checkpoint when due (with `history()`,
    the older parameters a stale online run needs on resume, when given) and
    returns True when the loop must stop (a preemption)."""
    distributed.note_progress(step)  # named if a peer process is lost
    faults.hit("after_step", step)
    m = {k: float(v) for k, v in distributed.to_host(dict(metrics)).items()}
    if extra:
      m.update(extra)
    nonfinite = m.pop("nonfinite", 0.0) > 0
    if nonfinite or any(not math.isfinite(m[k]) for k in self.watch if k in m):
      if self.train_cfg.on_nonfinite == "stop":
        self.ckpt.wait()
        check_finite(step, m, self.watch)
        check_finite(step, m)
        raise NonFiniteError(f"step {step}: non-finite values; the last good checkpoint "
                             "is intact")
      self.skipped += 1
      log.warning("step %d: non-finite %s; batch skipped (%d so far)", step,
                  [k for k, v in m.items() if not math.isfinite(v)], self.skipped)
    now = time.perf_counter()
    self._clock.tick()
    m["step_time"] = now - self._last
    self._last = now
    if "tokens" in m:
      m["tokens_per_s"] = m.pop("tokens") / max(m["step_time"], 1e-9)
    m["skipped_batches"] = float(self.skipped)
    self.last_metrics = m
    self.log.write(step, m)
    every = self.train_cfg.checkpoint_every
    stop = self.preemption.requested
    if step % every == 0 or step == self.total or stop:
      self.ckpt.save(step, state, data_state, self.meta,
                     history=history() if history is not None else None)
    if stop:
      self.stopped_early = True
      log.warning("stopping at step %d after SIGTERM; checkpoint saved", step)
    return stop

  def write(self, step: int, metrics: Mapping[str, float]):
    """Extra records (evaluations) into the same log."""
    self.log.write(step, dict(metrics), console=True)

  def close(self):
    self.ckpt.close()
    self.log.close()
    self.preemption.close()
    self._last = time.perf_counter()


def read_metrics(workdir: str) -> list[dict]:
  """The records of <workdir>/metrics.jsonl, in order."""
  return files.read_jsonl(layout.metrics(workdir))
