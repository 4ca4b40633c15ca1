"""Multi-process set-up on JAX's own multi-controller runtime.

One process per host (TPU VM worker, GPU node, or a CPU process in tests).
`initialize()` reads its settings from arguments or the environment:

  ALIGNMENT_COORDINATOR    host:port of process 0's coordinator service
  ALIGNMENT_NUM_PROCESSES  number of processes
  ALIGNMENT_PROCESS_ID     this process's index
  ALIGNMENT_LOCAL_DEVICES  optional comma-separated local device ids
  ALIGNMENT_INIT_TIMEOUT   seconds to wait for all processes (default 120)

On a Cloud TPU VM none is needed: `jax.distributed.initialize()` discovers the
slice from the TPU metadata. On CPU the collectives go through gloo. A missing
process or an unreachable coordinator ends with a `DistributedError` naming
the coordinator and the timeout, not a hang.

After initialisation every process runs the same program; each reads only its
shard of the data (`process_index`/`process_count`, used by alignment.data) and
global arrays are assembled with `jax.make_array_from_process_local_data`.
Logging, plots and reports come from process 0 (`is_main`). Orbax checkpoints
are written cooperatively by all processes.
"""
from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from typing import Optional, Sequence

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
                               initialization_timeout=timeout_s + 30)
  except Exception as e:  # pylint: disable=broad-except  (jaxlib raises XlaRuntimeError)
    raise DistributedError(
        f"process {process_id} of {num_processes} could not join the coordinator at "
        f"{coordinator} ({type(e).__name__}: {str(e)[:300]})") from None
  finally:
    watchdog.cancel()
  log.info("process %d/%d joined %s: %d local, %d global devices", jax.process_index(),
           jax.process_count(), coordinator, jax.local_device_count(), jax.device_count())
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


def is_main() -> bool:
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Every process waits here for the others (a no-op in a single process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)


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
