"""Fault injection for the reliability tests: kill, signal or poison a run at a named point.

Off unless the environment variable ALIGNMENT_FAULT is set, as
`<action>@<point>:<step>[/p<index>]` (comma-separated for several), e.g.

  kill@after_step:7            SIGKILL right after train step 7 returns
  kill@during_checkpoint:10    SIGKILL while the checkpoint of step 10 is being
                               written (after orbax started, before it finished)
  kill@after_stage:online_ipo  SIGKILL when the study finishes that stage, before
                               it records it as done
  term@after_step:5            SIGTERM to itself (a preemption notice)
  kill@pairs:held_out          SIGKILL while a pair set is made: before its split
                               `held_out` is written (`train` already is)
  term@evaluation              SIGTERM in the middle of an evaluation (after its
                               samples are drawn); no ":<where>": the first one
  kill@report                  SIGKILL after results.json, before the plots and
                               report.md (as enospc@report, a kill)
  nan@loss:4                   the loss of step 4 becomes NaN (inside the step)
  nan@grad:5                   the gradients of step 5 become Inf/NaN (the loss stays finite)
  nan@judge:3                  the judge's verdict probabilities of step 3 become NaN
  enospc@stream                OSError(ENOSPC) in a writer, after part of its output is
                               written: checkpoint:<step> (the save of that step),
                               stream:<first step> (a chunk), export, report, import
                               (without ":<where>" a point fires every time)
  kill@after_step:4/p1         only process 1 of a multi-process run is killed (the
                               others must notice: alignment.distributed's watchdog)
  stop@after_step:2/p1         SIGSTOP to itself: a process that hangs, threads and all
                               (a frozen host); its peers must notice its silence

Production code calls `hit(point, where)` at those points; with the variable
unset it is a dictionary lookup that returns False.
"""
from __future__ import annotations

import errno
import os
import signal
import sys

_ENV = "ALIGNMENT_FAULT"


def _parse() -> dict[tuple[str, str], str]:
  spec = os.environ.get(_ENV, "")
  out = {}
  for item in filter(None, (x.strip() for x in spec.split(","))):
    item, _, process = item.partition("/p")
    if process and int(process) != _process_index():
      continue  # planned for another process
    action, _, rest = item.partition("@")
    point, colon, where = rest.partition(":")
    out[(point, where if colon else "*")] = action
  return out


def _process_index() -> int:
  import jax  # pylint: disable=g-import-not-at-top  (only when a process is named)
  return jax.process_index()


def planned(point: str, where="") -> str:
  """The action planned at (point, where), or ''."""
  if _ENV not in os.environ:
    return ""
  faults = _parse()
  return faults.get((point, str(where)), faults.get((point, "*"), ""))


def hit(point: str, where="", path: str = "") -> bool:
  """Carries out a planned kill/term/enospc at this point (`path`: the file being
  written, named by the OSError); True if a 'nan' is planned here."""
  action = planned(point, where)
  if action == "enospc":
    sys.stderr.write(f"[fault] ENOSPC at {point}:{where}\n")
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path or None)
  if action == "kill":
    sys.stderr.write(f"[fault] SIGKILL at {point}:{where}\n")
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)
  if action == "stop":
    sys.stderr.write(f"[fault] SIGSTOP at {point}:{where}\n")
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGSTOP)
  if action == "term":
    sys.stderr.write(f"[fault] SIGTERM at {point}:{where}\n")
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGTERM)
  return action == "nan"


def nan_steps(point: str) -> list[int]:
  """Steps at which a NaN is planned for `point` (read when a step is traced)."""
  return [int(w) for (p, w), a in _parse().items() if p == point and a == "nan"]
