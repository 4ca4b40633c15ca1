"""Where a run's wall time goes: phases timed at the loops' seams, per process.

The study asks where a stage's seconds go (start-up, data, compilation, steps,
evaluation, checkpoints, exports) so that overheads can be found and cut. Each
seam is timed where it is implemented, once:

  data        `pipeline.make_iterator` (a loop's records: converted or cached)
  evaluation  building an Evaluator (its fixed samples and scores) and every
              evaluation a loop runs (`program.run_supervised`'s held-out figures,
              `evaluation.Evaluator`)
  checkpoint  `Checkpointer.save`/`wait`/`close` (the blocking part of a save)
  export      `checkpoint.export_params`
  first_step  the loop's first step, its compilation included
  steps       every later step: the time between two steps' ends (sampling and
              judging included in an online loop), less the phases above that ran
              in between

Whatever is left of a stage's wall time (imports, building models and states,
restoring, a pair set's sampling) is `other` in `split`. Phases do not nest: a
phase entered inside another is counted in the outer one only. The totals are
per process and reset by `reset()` (the study, at each stage's start).
"""
from __future__ import annotations

import contextlib
import functools
import time
from typing import Callable, Iterator

PHASES = ("data", "evaluation", "checkpoint", "export", "first_step", "steps")

_totals: dict[str, float] = {}
_depth = 0
_accounted = 0.0  # seconds of every outermost phase so far (`steps` excluded)


def reset() -> None:
  """Starts the totals afresh (a stage's start)."""
  global _accounted
  _totals.clear()
  _accounted = 0.0


def add(name: str, seconds: float) -> None:
  if name not in PHASES:
    raise ValueError(f"timing phase {name!r}: one of {PHASES}")
  _totals[name] = _totals.get(name, 0.0) + max(0.0, seconds)


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
  """Times the block as `name`, unless it runs inside another phase."""
  global _depth, _accounted
  _depth += 1
  start = time.perf_counter()
  try:
    yield
  finally:
    _depth -= 1
    if _depth == 0:
      took = time.perf_counter() - start
      add(name, took)
      _accounted += took


def timed(name: str) -> Callable:
  """A decorator: every call of the function is the phase `name`."""
  def wrap(fn):
    @functools.wraps(fn)
    def call(*args, **kwargs):
      with phase(name):
        return fn(*args, **kwargs)
    return call
  return wrap


def accounted() -> float:
  """Seconds spent in phases so far; a step's own time is the wall time between two
  steps less what this grew by in between (`StepClock`)."""
  return _accounted


class StepClock:
  """Times a loop's steps: `tick()` at each step's end adds the time since the previous
  tick (or since the clock started), less the phases in between, to `first_step`
  (the first tick) or `steps`."""

  def __init__(self):
    self._last = time.perf_counter()
    self._mark = _accounted
    self._ticks = 0

  def tick(self) -> None:
    now = time.perf_counter()
    own = (now - self._last) - (_accounted - self._mark)
    add("first_step" if self._ticks == 0 else "steps", own)
    self._ticks += 1
    self._last, self._mark = now, _accounted


def split(total_seconds: float) -> dict[str, float]:
  """{phase: seconds} of the totals so far (phases never entered are 0) and `other`,
  the rest of `total_seconds`; rounded to 0.1 s."""
  out = {name: round(_totals.get(name, 0.0), 1) for name in PHASES}
  out["other"] = round(max(0.0, total_seconds - sum(_totals.values())), 1)
  return out
