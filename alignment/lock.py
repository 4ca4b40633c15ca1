"""One writer per workdir: a lock file that names its holder.

A run (`alignment.main.run`) and a study (`alignment.study.run`) hold
<workdir>/LOCK.json while they write there: JSON with the host, pid, start
time and command of the holder. A second one started on the same workdir is
refused with one line naming the holder.

- Atomic: the record is written whole to a private temporary file, then
  hard-linked to LOCK.json; the link fails if LOCK.json exists, so exactly one
  of two racing processes wins and nobody ever reads a half-written record.
  (Where the file system has no hard links, LOCK.json is created with O_EXCL
  and the record written into it just after.)
- Stale locks: a lock of this host whose pid is not alive (or was reused by a
  younger process) is taken over with a one-line warning. A lock of another
  host is never taken over, since its process cannot be checked from here: the
  message says to delete the file once that run is surely gone.
- Nested: a study holds its workdir and its stages' runs each hold their own
  stage directory; a lock held by this same process, on the workdir or on a
  directory above it, never blocks. A workdir inside one held by another live
  process (a stage of a running study) is refused.
- Multi-process JAX runs: only process 0 takes the lock (the workdir is shared).
- URL workdirs (gs://...): object stores have no atomic create-if-absent here,
  so the check and the write are two operations there.
- Released on exit: normal, exception, and SIGTERM outside a training loop
  (turned into SystemExit while a lock is held; inside a loop SIGTERM stops
  the loop cleanly, which then returns). A SIGKILL leaves a stale lock, taken
  over by the next start.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
from typing import Iterator, Optional

from etils import epath

from alignment import layout

log = logging.getLogger("alignment")


class LockError(RuntimeError):
  """The workdir is held by another run: names the holder."""


def _proc_start(pid: int) -> Optional[str]:
  """The process's start time in clock ticks since boot (Linux), or None."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[19]
  except (OSError, IndexError):
    return None


def _record() -> dict:
  return {"host": socket.gethostname(), "pid": os.getpid(), "proc_start": _proc_start(
      os.getpid()), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
          "command": " ".join(sys.argv)}


def _alive(holder: dict) -> bool:
  """Whether a holder on this host is a live process (the same one that wrote it)."""
  pid = holder.get("pid")
  if not isinstance(pid, int) or pid <= 0:
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    pass  # alive, another user's
  start = _proc_start(pid)
  return not (holder.get("proc_start") and start and start != holder["proc_start"])


def _read(path: str) -> Optional[dict]:
  """The holder's record; None if there is no lock; {} if it cannot be read (yet)."""
  p = epath.Path(path)
  for _ in range(20):  # an O_EXCL creator writes its record just after creating the file
    try:
      text = p.read_text()
    except FileNotFoundError:
      return None
    try:
      return json.loads(text)
    except json.JSONDecodeError:
      time.sleep(0.05)
  return {}


def _create(path: str, record: dict) -> bool:
  """Creates the lock holding `record`; False if it exists already."""
  text = json.dumps(record, sort_keys=True)
  if "://" in path:  # no atomic create-if-absent: check, then write
    if epath.Path(path).exists():
      return False
    epath.Path(path).write_text(text)
    return True
  tmp = f"{path}.{os.getpid()}.tmp"
  with open(tmp, "w") as f:
    f.write(text)
  try:
    os.link(tmp, path)
    return True
  except FileExistsError:
    return False
  except OSError:  # no hard links on this file system
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      return False
    with os.fdopen(fd, "w") as f:
      f.write(text)
    return True
  finally:
    os.unlink(tmp)


def _mine(holder: Optional[dict]) -> bool:
  return bool(holder) and holder.get("host") == socket.gethostname() and \
      holder.get("pid") == os.getpid()


def describe(holder: dict) -> str:
  return (f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, started "
          f"{holder.get('started', '?')}")


def _refuse(path: str, holder: dict, what: str) -> LockError:
  if not holder:
    return LockError(f"{path}: {what} held by a process whose lock record cannot be read; "
                     "delete the file if no run uses the directory")
  remove = "" if holder.get("host") == socket.gethostname() else (
      f"; it is another host's lock, never taken over automatically: delete {path} once "
      "that run is surely gone")
  return LockError(f"{path}: {what} held by another run ({describe(holder)}: "
                   f"{holder.get('command', '?')}){remove}")


def _take_over(path: str, stale: dict) -> None:
  """Moves a stale lock aside, checking it is still the one judged stale."""
  aside = f"{path}.stale.{os.getpid()}"
  try:
    os.rename(path, aside)
  except FileNotFoundError:
    return  # someone else moved it first
  with open(aside) as f:
    try:
      moved = json.loads(f.read())
    except json.JSONDecodeError:
      moved = {}
  if moved != stale:  # we moved a newer, live lock: put it back
    with contextlib.suppress(OSError):
      os.link(aside, path)
  os.unlink(aside)
  if moved == stale:
    log.warning("%s: taking over a stale lock (%s: no such process)", path, describe(stale))


def _check_parents(directory: str) -> None:
  """Refuses a workdir inside one that another live process holds."""
  parent = os.path.dirname(directory)
  while parent and parent != directory:
    holder = _read(os.path.join(parent, layout.LOCK))
    ours = isinstance(holder, dict) and {"host", "pid"} <= holder.keys()  # not some other tool's
    if ours and not _mine(holder) and (holder["host"] != socket.gethostname() or
                                       _alive(holder)):
      raise _refuse(os.path.join(parent, layout.LOCK), holder, "the directory above is")
    directory, parent = parent, os.path.dirname(parent)


def acquire(workdir: str) -> Optional[str]:
  """Takes <workdir>/LOCK.json; returns its path (None if this process holds it already
  or is not JAX process 0). Raises LockError naming the holder."""
  if "jax" in sys.modules and sys.modules["jax"].process_index() != 0:
    return None  # the shared workdir is process 0's to lock
  url = "://" in str(workdir)
  directory = str(workdir) if url else os.path.abspath(workdir)
  path = os.path.join(directory, layout.LOCK)
  if not url:
    _check_parents(directory)
  epath.Path(directory).mkdir(parents=True, exist_ok=True)
  record = _record()
  for _ in range(3):
    if _create(path, record):
      return path
    holder = _read(path)
    if holder is None:
      continue  # released meanwhile
    if _mine(holder):
      return None
    if url or not holder or holder.get("host") != socket.gethostname() or _alive(holder):
      raise _refuse(path, holder, "the workdir is")
    _take_over(path, holder)
  raise _refuse(path, _read(path) or {}, "the workdir is")


def release(path: Optional[str]) -> None:
  """Removes the lock if it is still this process's."""
  if path and _mine(_read(path)):
    with contextlib.suppress(FileNotFoundError):
      epath.Path(path).unlink()


def _sigterm_exits(signum, frame):
  del frame
  raise SystemExit(128 + signum)


@contextlib.contextmanager
def held(workdir: str) -> Iterator[Optional[str]]:
  """Holds the workdir's lock for the block; releases it on any exit. While held, a
  SIGTERM that no training loop catches exits through the block (SystemExit)."""
  path = acquire(workdir)
  previous = None
  if path is not None:
    with contextlib.suppress(ValueError):  # not the main thread
      if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        previous = signal.signal(signal.SIGTERM, _sigterm_exits)
  try:
    yield path
  finally:
    if previous is not None:
      with contextlib.suppress(ValueError):
        signal.signal(signal.SIGTERM, previous)
    release(path)
