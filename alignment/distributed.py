"""Multi-process set-up on JAX's own multi-controller runtime.

One process per host (TPU VM worker, GPU node, or a CPU process in tests).
`initialize()` reads its settings from arguments or the environment:

  ALIGNMENT_COORDINATOR    host:port of process 0's coordinator service
  ALIGNMENT_NUM_PROCESSES  number of processes
  ALIGNMENT_PROCESS_ID     this process's index
  ALIGNMENT_LOCAL_DEVICES  optional comma-separated local device ids
  ALIGNMENT_INIT_TIMEOUT   seconds to wait for all processes (default 120)
  ALIGNMENT_HEARTBEAT_TIMEOUT  seconds after which a silent peer counts as lost
                           (default 30; see "a lost process" below)

On a Cloud TPU VM none is needed: `jax.distributed.initialize()` discovers the
slice from the TPU metadata. On CPU the collectives go through gloo. A missing
process or an unreachable coordinator ends with a `DistributedError` naming
the coordinator and the timeout, not a hang; a process lost later is named in
one line by the others, which exit with status 3 (EXIT_LOST).

After initialisation every process runs the same program; each reads only its
shard of the data (`process_index`/`process_count`, used by alignment.data) and
global arrays are assembled with `jax.make_array_from_process_local_data`.
Logging, plots and reports come from process 0 (`is_main`). Orbax checkpoints
are written cooperatively by all processes.
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from typing import Callable, Optional, Sequence

import jax
import numpy as np

log = logging.getLogger(__name__)


class DistributedError(RuntimeError):
  pass


def _env_int(name: str) -> Optional[int]:
  value = os.environ.get(name)
  if value in (None, ""):
    return None
  try:
    return int(value)
  except ValueError:
    raise DistributedError(f"environment {name}={value!r}: expected an integer") from None


def on_tpu_vm() -> bool:
  return bool(os.environ.get("TPU_WORKER_HOSTNAMES") or os.environ.get("TPU_ACCELERATOR_TYPE")
              or os.path.exists("/dev/accel0") or os.path.exists("/dev/vfio/0"))


def initialize(coordinator: Optional[str] = None, num_processes: Optional[int] = None,
               process_id: Optional[int] = None,
               local_device_ids: Optional[Sequence[int]] = None,
               timeout_s: Optional[int] = None, platform: Optional[str] = None) -> bool:
  """Joins the process group; returns False when running single-process.

  Explicit arguments win over the environment. With nothing set and not on a
  TPU VM this is a no-op (single process).
  """
  coordinator = coordinator or os.environ.get("ALIGNMENT_COORDINATOR")
  num_processes = num_processes if num_processes is not None else _env_int(
      "ALIGNMENT_NUM_PROCESSES")
  process_id = process_id if process_id is not None else _env_int("ALIGNMENT_PROCESS_ID")
  timeout_s = timeout_s or _env_int("ALIGNMENT_INIT_TIMEOUT") or 120
  if local_device_ids is None and os.environ.get("ALIGNMENT_LOCAL_DEVICES"):
    local_device_ids = [int(x) for x in os.environ["ALIGNMENT_LOCAL_DEVICES"].split(",")]

  if coordinator is None and num_processes is None:
    if on_tpu_vm():
      watchdog = threading.Timer(timeout_s + 30, _give_up,
                                 ("the TPU slice's coordinator (worker 0)", timeout_s + 30,
                                  "?", "the slice's"))
      watchdog.daemon = True
      watchdog.start()
      try:  # the slice's hosts and this worker's index come from the TPU metadata
        jax.distributed.initialize(initialization_timeout=timeout_s)
      except Exception as e:  # pylint: disable=broad-except  (jaxlib raises XlaRuntimeError)
        raise DistributedError(
            f"TPU VM: the workers of the slice did not join within {timeout_s} s "
            f"({type(e).__name__}: {str(e)[:300]}); was the command started on every "
            "worker (--worker=all)?") from None
      finally:
        watchdog.cancel()
      return True
    return False
  if coordinator is None or num_processes is None or process_id is None:
    raise DistributedError(
        "multi-process run needs all of coordinator, num_processes and process_id "
        f"(got {coordinator!r}, {num_processes!r}, {process_id!r}); set "
        "ALIGNMENT_COORDINATOR, ALIGNMENT_NUM_PROCESSES, ALIGNMENT_PROCESS_ID")
  if not 0 <= process_id < num_processes:
    raise DistributedError(f"process_id={process_id} is outside 0..{num_processes - 1}")
  if (platform or os.environ.get("JAX_PLATFORMS", "")).startswith("cpu"):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if process_id != 0:
    _wait_for_port(coordinator, timeout_s, process_id, num_processes)
  # jaxlib aborts the process (a C++ check failure) when registration times out;
  # the watchdog fires first and says in one line what is wrong.
  watchdog = threading.Timer(timeout_s, _give_up, (coordinator, timeout_s, process_id,
                                                   num_processes))
  watchdog.daemon = True
  watchdog.start()
  try:
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id, local_device_ids=local_device_ids,
                               initialization_timeout=timeout_s + 30,
                               heartbeat_timeout_seconds=_jax_heartbeat_timeout())
  except Exception as e:  # pylint: disable=broad-except  (jaxlib raises XlaRuntimeError)
    raise DistributedError(
        f"process {process_id} of {num_processes} could not join the coordinator at "
        f"{coordinator} ({type(e).__name__}: {str(e)[:300]})") from None
  finally:
    watchdog.cancel()
  log.info("process %d/%d joined %s: %d local, %d global devices", jax.process_index(),
           jax.process_count(), coordinator, jax.local_device_count(), jax.device_count())
  watchdog = _Watchdog(process_id, num_processes)
  _watchdogs.append(watchdog)
  # Stopped before the interpreter finalises: a daemon thread caught inside a
  # jaxlib call then is unwound through C++ and aborts the process.
  atexit.register(_stop_watchdogs)
  watchdog.start()
  if process_id != 0:
    _on_abort_name_the_coordinator(coordinator, num_processes)
  return True


def _wait_for_port(address: str, timeout_s: float, process_id: int, num_processes: int):
  host, _, port = address.rpartition(":")
  deadline = time.monotonic() + timeout_s
  while True:
    try:
      with socket.create_connection((host or "localhost", int(port)), timeout=2):
        return
    except OSError:
      if time.monotonic() > deadline:
        raise DistributedError(
            f"process {process_id} of {num_processes}: the coordinator at {address} is "
            f"unreachable after {timeout_s:.0f} s; is process 0 started and the port "
            "open?") from None
      time.sleep(0.5)


def _give_up(address, timeout_s, process_id, num_processes):
  sys.stderr.write(
      f"error: process {process_id} of {num_processes}: not every process joined the "
      f"coordinator at {address} within {timeout_s} s; is every process started with the "
      "same ALIGNMENT_NUM_PROCESSES?\n")
  sys.stderr.flush()
  os._exit(2)  # pylint: disable=protected-access


# -- a lost process -------------------------------------------------------------
# When a process dies, its peers' collectives fail (gloo: "connection closed by
# peer") or block forever (a host that vanished), and JAX's coordination service
# aborts the survivors with a C++ fatal error once the dead one misses its
# heartbeats (jaxlib's Python hook for that, `missed_heartbeat_callback`, cannot
# convert the status and aborts too). So the processes also beat through the
# service's key-value store, and a watchdog thread in each notices a peer whose
# beats stop - or a coordinator that no longer answers - within
# ALIGNMENT_HEARTBEAT_TIMEOUT seconds, well before JAX's own (longer) timeout;
# it prints one line naming the lost process and exits with EXIT_LOST. Nothing
# can recover a collective whose peer is gone: a rerun resumes from the last
# complete checkpoint.

EXIT_LOST = 3  # a process of the job was lost; rerunning the same command resumes


def heartbeat_timeout() -> float:
  """Seconds without a peer's beat before it counts as lost (ALIGNMENT_HEARTBEAT_TIMEOUT)."""
  return float(_env_int("ALIGNMENT_HEARTBEAT_TIMEOUT") or 30)


def _jax_heartbeat_timeout() -> int:
  # JAX's own detection ends in an abort: it must come well after ours.
  return int(2 * heartbeat_timeout() + 30)


class _Progress:
  """What this process last did, for the line that reports a lost peer."""
  step: Optional[int] = None  # the last step this process finished
  checkpoints: Optional[Callable[[], Optional[int]]] = None  # -> newest complete step


_progress = _Progress()


def note_progress(step: int, last_checkpoint: Optional[Callable[[], Optional[int]]] = None):
  """Records the last finished step (and how to find the newest complete checkpoint)."""
  _progress.step = step
  if last_checkpoint is not None:
    _progress.checkpoints = last_checkpoint


def _lost_line(who: str) -> str:
  where = "" if _progress.step is None else f" (lost at step ~{_progress.step + 1})"
  try:
    last = _progress.checkpoints() if _progress.checkpoints else None
  except Exception:  # pylint: disable=broad-except  (only for the message)
    last = None
  ckpt = "no checkpoint yet" if last is None else f"the last checkpoint is step {last}"
  return (f"error: {who} stopped responding{where}; {ckpt}; rerun the same command to "
          "resume")


_BEATS = "alignment/beat/"
_DONE = "done"


class _Watchdog(threading.Thread):
  """Beats for this process and watches the others' beats (a daemon thread)."""

  def __init__(self, process_id: int, num_processes: int):
    super().__init__(name="alignment-watchdog", daemon=True)
    from jax._src import distributed as jax_distributed  # pylint: disable=g-import-not-at-top
    self.client = jax_distributed.global_state.client
    self.me, self.n = process_id, num_processes
    self.timeout = heartbeat_timeout()
    self.period = min(1.0, self.timeout / 5)
    self.stopping = threading.Event()

  def stop(self):
    self.stopping.set()
    if self.is_alive() and threading.current_thread() is not self:
      self.join(timeout=10)

  def run(self):
    beats, seen, failing_since = 0, {}, None
    while not self.stopping.is_set():
      now = time.monotonic()
      try:
        beats += 1
        self.client.key_value_set(f"{_BEATS}{self.me}", str(beats), allow_overwrite=True)
        values = dict(self.client.key_value_dir_get(_BEATS))
        failing_since = None
      except Exception:  # pylint: disable=broad-except  (the coordinator does not answer)
        failing_since = failing_since or now
        if self.me != 0 and now - failing_since > min(self.timeout, 5 * self.period):
          lost(f"process 0 of {self.n} (the coordinator)")
        self.stopping.wait(self.period)
        continue
      for i in range(self.n):
        value = values.get(f"{_BEATS}{i}")
        if i == self.me or value in (None, _DONE):
          continue  # a peer that has not beaten yet is still starting; one that finished
        if seen.get(i, (None,))[0] != value:
          seen[i] = (value, now)
        elif now - seen[i][1] > self.timeout:
          lost(f"process {i} of {self.n}")
      self.stopping.wait(self.period)


_watchdogs: list = []


def _stop_watchdogs():
  while _watchdogs:
    _watchdogs.pop().stop()


def finished():
  """This process ended its work normally: its watchdog stops, its peers stop
  watching its beats, and it leaves the job with the others (JAX's shutdown
  barrier: the coordinator, process 0, stays up until every process is done)."""
  if jax.process_count() > 1 and leave():
    try:
      jax.distributed.shutdown()
    except Exception:  # pylint: disable=broad-except  (the coordinator has gone already)
      pass


def leave():
  """This process ends now, its peers knowing why (e.g. `MainFailed`: process 0's
  error): its watchdog stops and its peers stop watching its beats, so that none
  names it as lost while it is still reporting its own error. No shutdown barrier:
  the others may not come to one. False when the coordinator no longer answers."""
  if jax.process_count() == 1:
    return True
  _stop_watchdogs()
  try:
    _client().key_value_set(f"{_BEATS}{jax.process_index()}", _DONE, allow_overwrite=True)
  except Exception:  # pylint: disable=broad-except  (the coordinator has gone already)
    return False
  return True


_abort_handler = []  # keeps the ctypes callback alive


def _on_abort_name_the_coordinator(coordinator: str, num_processes: int):
  """When the coordinator (process 0, which hosts the coordination service) dies,
  jaxlib aborts the other processes at once from a C++ thread (its error poll
  fails): no Python code runs, only SIGABRT handlers. This one names the lost
  coordinator when it no longer accepts connections, then aborts as before. (The
  handler runs Python: it takes the GIL, which JAX releases while it waits.)"""
  import ctypes  # pylint: disable=g-import-not-at-top
  libc = ctypes.CDLL(None)
  host, _, port = coordinator.rpartition(":")

  def handler(signum):
    try:
      with socket.create_connection((host or "localhost", int(port)), timeout=1):
        pass  # the coordinator is there: some other fatal error
    except OSError:
      lost(f"process 0 of {num_processes} (the coordinator)")
    libc.signal(signum, 0)  # SIG_DFL
    os.abort()

  callback = ctypes.CFUNCTYPE(None, ctypes.c_int)(handler)
  _abort_handler.append(callback)
  libc.signal.restype = ctypes.c_void_p
  libc.signal.argtypes = (ctypes.c_int, ctypes.c_void_p)
  libc.signal(signal.SIGABRT, ctypes.cast(callback, ctypes.c_void_p))


def lost(who: str):
  """Reports a lost process in one line and ends this one (its collectives cannot
  complete)."""
  sys.stderr.write(_lost_line(who) + "\n")
  sys.stderr.flush()
  os._exit(EXIT_LOST)  # pylint: disable=protected-access


def wait_for_lost_peer():
  """After an error in a multi-process run: gives the watchdog time to name a lost
  peer (which ends the process) before the error itself is reported."""
  if jax.process_count() > 1:
    time.sleep(heartbeat_timeout() + 5)


def is_main() -> bool:
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Every process waits here for the others (a no-op in a single process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)


# -- process 0 decides, the others follow ------------------------------------
# A study's stages are decided from files (is this stage done? rerun it?) and some
# are made by process 0 alone (pair sets). Every process must take the same
# decisions, or one would skip a stage another runs and their collectives would
# deadlock. So process 0 decides and posts the decision, JSON, through the
# coordination service's key-value store; the others read it. No device
# collective is involved: a process may wait there as long as process 0 works
# (a pair set of a large study samples for an hour), while its watchdog beats on
# and names process 0 if it dies. Every process must make the same calls in the
# same order: a key is the call's sequence number and its name.

_SHARED = "alignment/shared/"
_POLL_S = 0.1
_calls = [0]


class MainFailed(DistributedError):
  """Process 0 failed in work it did alone; the others stop with its error."""


def _key(name: str) -> str:
  _calls[0] += 1
  return f"{_SHARED}{_calls[0]}/{name}"


def _read_key(client, key: str) -> str:
  """The value at `key` once it is set (polled: the watchdog thread runs meanwhile)."""
  while True:
    try:
      return client.key_value_try_get(key)
    except Exception:  # pylint: disable=broad-except  (NOT_FOUND; a lost peer is the watchdog's)
      time.sleep(_POLL_S)


def _client():
  from jax._src import distributed as jax_distributed  # pylint: disable=g-import-not-at-top
  return jax_distributed.global_state.client


def broadcast(name: str, value=None):
  """Process 0's `value` (JSON-able) on every process; the others' `value` is ignored
  and they wait for process 0's. In a single process: `value`."""
  if jax.process_count() == 1:
    return value
  key = _key(name)
  if is_main():
    _client().key_value_set(key, json.dumps(value))
    return value
  return json.loads(_read_key(_client(), key))


def gather(name: str, value) -> list:
  """Every process's `value` (JSON-able), in process order, on every process; a
  barrier too: it returns once every process has called it."""
  if jax.process_count() == 1:
    return [value]
  key, client = _key(name), _client()
  client.key_value_set(f"{key}/{jax.process_index()}", json.dumps(value))
  return [json.loads(_read_key(client, f"{key}/{i}")) for i in range(jax.process_count())]


def on_main(name: str, fn: Callable[[], object]):
  """Runs `fn()` on process 0 alone while the others wait (for as long as it takes);
  returns its result on process 0 and None on the others, once it has returned. If
  it raises, process 0 raises that and the others MainFailed naming `name` and the
  error, so that no process goes on alone. In a single process: `fn()`."""
  if jax.process_count() == 1:
    return fn()
  if is_main():
    try:
      out = fn()
    except BaseException as e:
      broadcast(name, f"{type(e).__name__}: {e}"[:1000])
      gather(f"{name} (failed)", None)  # every process has the error before this one ends
      raise
    broadcast(name, None)
    return out
  error = broadcast(name)
  if error is not None:
    gather(f"{name} (failed)", None)
    raise MainFailed(f"process 0 of {jax.process_count()} failed in {name} (its log has "
                     f"the details): {error}")
  return None


# -- rows of batch-sharded global arrays ------------------------------------
# A global batch [B, ...] is split over the mesh's batch axes; a process holds
# the rows of its devices. These helpers move between that and host numpy.


def local_row_indices(x) -> np.ndarray:
  """Global indices of this process's rows of a batch-sharded array, ascending."""
  if not isinstance(x, jax.Array) or x.is_fully_addressable:
    return np.arange(np.shape(x)[0])
  starts = {}
  for shard in x.addressable_shards:
    rows = shard.index[0]
    starts.setdefault(rows.start or 0, range(*rows.indices(x.shape[0])))
  return np.concatenate([np.asarray(starts[k]) for k in sorted(starts)])


def local_rows(x) -> np.ndarray:
  """This process's rows of a batch-sharded global array, in ascending row order
  (all rows in a single process)."""
  if not isinstance(x, jax.Array) or x.is_fully_addressable:
    return np.asarray(x)
  by_start = {}
  for shard in x.addressable_shards:
    by_start.setdefault(shard.index[0].start or 0, shard)  # replicas share a start
  return np.concatenate([np.asarray(by_start[k].data) for k in sorted(by_start)])


def rows_to_global(local: np.ndarray, like) -> jax.Array:
  """The global array whose rows this process holds are `local` (the rows of
  `local_rows(like)`), split over the batch like `like`; numpy in one process."""
  if not isinstance(like, jax.Array) or like.is_fully_addressable:
    return local
  spec = like.sharding.spec
  rows = jax.sharding.NamedSharding(like.sharding.mesh, jax.sharding.PartitionSpec(
      spec[0] if len(spec) else None))
  return jax.make_array_from_process_local_data(rows, np.asarray(local),
                                                (like.shape[0],) + np.shape(local)[1:])


def host_to_global(tree, shardings):
  """Arrays every process holds whole -> global arrays with `shardings` (a
  sharding or a tree of them). In a single process the tree is returned as it
  is (jit places it), so single-process numerics never change."""
  if jax.process_count() == 1:
    return tree
  if isinstance(shardings, jax.sharding.Sharding):
    shardings = jax.tree.map(lambda _: shardings, tree)

  def put(x, s):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return x
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, s, lambda idx: x[idx])
  return jax.tree.map(put, tree, shardings)


def to_host(tree):
  """Global arrays -> whole numpy arrays on every process (gathered across
  processes when needed)."""
  def get(x):
    if not isinstance(x, jax.Array) or x.is_fully_addressable or x.is_fully_replicated:
      return np.asarray(jax.device_get(x))
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return jax.tree.map(get, tree)


def shutdown():
  try:
    jax.distributed.shutdown()
  except Exception:  # pylint: disable=broad-except  (not initialised)
    pass


def setup_host():
  """Idempotent per-process set-up; call at the top of every loop."""
  jax.config.update("jax_threefry_partitionable", True)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  try:  # TensorFlow is an input pipeline here: it must never take an accelerator.
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    tf.config.set_visible_devices([], "GPU")
    tf.config.set_visible_devices([], "TPU")
  except (ImportError, RuntimeError, ValueError):
    pass  # not installed, already initialised, or no such device type
  ours = logging.getLogger("alignment")  # our own messages, whatever absl configured
  if not ours.handlers:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
    ours.addHandler(handler)
    ours.setLevel(logging.INFO)
    ours.propagate = False
  for noisy in ("absl", "orbax", "jax._src", "tensorflow"):
    logging.getLogger(noisy).setLevel(logging.WARNING)
