"""Mesh, logical-axis rules, and state created directly sharded.

One mesh with named axes `data`, `fsdp`, `tensor`. Models name every
parameter and activation axis logically ("embed", "activation_batch", ...);
the rules table (config `mesh.rules`, default `DEFAULT_RULES`) maps those
names to mesh axes. Parameters and activations have separate names where they
differ: a parameter's "embed" axis is split over `fsdp` (ZeRO-3 style), while
activations keep their embedding whole and split their batch over `data` and
`fsdp`.

State is never built unsharded: `jax.eval_shape` of the initialiser gives the
abstract state with its logical names, the rules turn those into
`NamedSharding`s, and `jax.jit(init, out_shardings=...)` builds each shard on
its own device (what pjit became).

Role meshes: the policy, the reference, the proxy PM and a model golden judge
each run on the whole mesh (the default) or on their own sub-mesh: a slice of
every process's local devices with its own (data, fsdp, tensor) shape
(`role_mesh`). Arrays cross between roles only by a reshard (`move_rows`,
`jax.device_put` to the target's sharding): batches and verdicts are rows,
weights move whole trees of parameters.
"""
from __future__ import annotations

import contextlib
import logging
import math
from typing import Any, Callable, Mapping, Sequence

import flax.core.meta
import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")

# (logical name, mesh axes or None). Order matters only when two names of one
# array would claim the same mesh axis: flax then leaves the later one whole.
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    # parameters
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("kv", None),
    ("relpos_buckets", None),
    # activations
    ("activation_batch", ("data", "fsdp")),
    ("activation_length", None),
    ("activation_embed", None),
    ("activation_heads", "tensor"),
    ("activation_kv", None),
    ("activation_mlp", "tensor"),
    ("activation_vocab", "tensor"),
    # sampler key/value cache
    ("cache_batch", ("data", "fsdp")),
    ("cache_length", None),
    ("cache_heads", "tensor"),
    ("cache_kv", None),
)

log = logging.getLogger(__name__)


class MeshError(ValueError):
  pass


def resolve_mesh_shape(shape: Mapping[str, int], num_devices: int) -> dict[str, int]:
  """Fills one -1 entry so that the product equals the device count."""
  unknown = sorted(set(shape) - set(MESH_AXES))
  if unknown:
    raise MeshError(f"mesh has unknown axes {unknown}; the axes are {MESH_AXES}")
  dims = {a: int(shape.get(a, 1)) for a in MESH_AXES}
  free = [a for a, n in dims.items() if n == -1]
  if len(free) > 1:
    raise MeshError(f"mesh {dims}: at most one axis may be -1")
  if any(n == 0 or n < -1 for n in dims.values()):
    raise MeshError(f"mesh {dims}: sizes must be positive (or one -1)")
  fixed = math.prod(n for n in dims.values() if n != -1)
  if free:
    if num_devices % fixed:
      raise MeshError(f"mesh {dims}: the fixed axes use {fixed} devices, which does not "
                      f"divide the {num_devices} available")
    dims[free[0]] = num_devices // fixed
  if math.prod(dims.values()) != num_devices:
    raise MeshError(f"mesh {dims} needs {math.prod(dims.values())} devices; "
                    f"{num_devices} are available")
  return dims


def make_mesh(shape: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
  devices = list(jax.devices() if devices is None else devices)
  dims = resolve_mesh_shape(shape, len(devices))
  sizes = tuple(dims[a] for a in MESH_AXES)
  try:
    arr = jax.experimental.mesh_utils.create_device_mesh(sizes, devices=devices)
  except Exception:  # pylint: disable=broad-except  (non-TPU topologies: plain order)
    arr = np.asarray(devices).reshape(sizes)
  return Mesh(arr, MESH_AXES)


def rules_from_config(rules) -> tuple[tuple[str, Any], ...]:
  """Rules from a config value (list of [name, axes]); validated against the mesh axes."""
  out = []
  for i, rule in enumerate(rules):
    if not isinstance(rule, (list, tuple)) or len(rule) != 2:
      raise MeshError(f"mesh.rules[{i}]={rule!r}: expected (logical name, mesh axes)")
    name, axes = rule
    axes = tuple(axes) if isinstance(axes, (list, tuple)) else axes
    for a in (axes if isinstance(axes, tuple) else (axes,)):
      if a is not None and a not in MESH_AXES:
        raise MeshError(f"mesh.rules[{i}]: {name!r} -> unknown mesh axis {a!r}")
    out.append((str(name), axes))
  return tuple(out)


def _fit_spec(spec: P, shape: tuple[int, ...], mesh: Mesh, where: str) -> P:
  """Leaves whole any dimension its mesh axes do not divide (e.g. 1 kv head on 2 tensor shards)."""
  parts = list(spec) + [None] * (len(shape) - len(spec))
  fitted = []
  for dim, axes in zip(shape, parts):
    names = axes if isinstance(axes, tuple) else (axes,) if axes else ()
    size = math.prod(mesh.shape[a] for a in names)
    if names and dim % size:
      log.debug("%s: dimension %d not divisible by %s=%d; kept whole", where, dim, names, size)
      fitted.append(None)
    else:
      fitted.append(axes)
  return P(*fitted)


def strip_boxes(tree):
  """Removes flax's partitioning boxes without applying sharding constraints."""
  is_box = lambda x: isinstance(x, flax.core.meta.AxisMetadata)
  return jax.tree.map(lambda x: x.unbox(apply_constraint=False) if is_box(x) else x, tree,
                      is_leaf=is_box)


def logical_shardings(abstract_boxed, mesh: Mesh, rules) -> Any:
  """NamedShardings for a (boxed) abstract tree; unboxed leaves are replicated."""
  specs = nn.get_partition_spec(abstract_boxed)
  mesh_specs = nn.logical_to_mesh(specs, rules)
  shapes = strip_boxes(abstract_boxed)

  def to_sharding(path, spec, x):
    if not hasattr(x, "shape"):
      return NamedSharding(mesh, P())
    spec = spec if isinstance(spec, P) else P()
    return NamedSharding(mesh, _fit_spec(spec, x.shape, mesh, jax.tree_util.keystr(path)))

  return jax.tree_util.tree_map_with_path(
      to_sharding, mesh_specs, shapes, is_leaf=lambda v: isinstance(v, P) or v is None)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, rules, ndim: int = 2) -> NamedSharding:
  """Sharding of a [B, ...] input: batch over the axes of `activation_batch`."""
  spec = nn.logical_to_mesh_axes(("activation_batch",) + (None,) * (ndim - 1), rules)
  return NamedSharding(mesh, spec)


@contextlib.contextmanager
def use(mesh: Mesh, rules):
  """Mesh and rules for tracing: activation constraints resolve inside."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    yield


def create_sharded(init_fn: Callable[..., Any], mesh: Mesh, rules, *args):
  """Runs init_fn(*args) with every output born on its shards.

  init_fn may return flax-boxed leaves (LogicallyPartitioned); the result is
  unboxed. Returns (state, shardings).
  """
  with use(mesh, rules):
    abstract = jax.eval_shape(init_fn, *args)
    shardings = logical_shardings(abstract, mesh, rules)
    state = jax.jit(lambda *a: nn.unbox(init_fn(*a)), out_shardings=shardings)(*args)
  return state, shardings


def abstract_with_shardings(abstract_unboxed, shardings):
  """ShapeDtypeStructs carrying shardings: the target of a sharded restore."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      abstract_unboxed, shardings)


def data_parallel_size(mesh_shape: Mapping[str, int], rules) -> int:
  """How many ways the batch is split (product of `activation_batch`'s axes)."""
  axes = dict(rules).get("activation_batch")
  names = axes if isinstance(axes, tuple) else (axes,) if axes else ()
  return math.prod(mesh_shape[a] for a in names)


def batch_shardings(batch: Any, mesh: Mesh, rules) -> Any:
  """A sharding per leaf of a (typed) batch: each leaf's first axis is the batch."""
  return jax.tree.map(lambda x: batch_sharding(mesh, rules, max(np.ndim(x), 1)), batch)


# ---------------------------------------------------------------------------
# Role meshes
# ---------------------------------------------------------------------------


def parse_device_slice(text: str, num_local: int, where: str) -> slice:
  """'a:b' -> slice(a, b) of a process's local devices, checked against their count."""
  start, sep, stop = str(text).partition(":")
  try:
    a, b = int(start), int(stop)
  except ValueError:
    raise MeshError(f"{where}={text!r}: expected 'first:end' local device indices, "
                    "e.g. '4:8'") from None
  if not sep or not 0 <= a < b <= num_local:
    raise MeshError(f"{where}={text!r}: needs 0 <= first < end <= {num_local} "
                    "(the devices of each process)")
  return slice(a, b)


def role_devices(device_slice: slice, devices: Sequence[jax.Device] | None = None):
  """The slice of every process's local devices, process by process."""
  devices = list(jax.devices() if devices is None else devices)
  by_process: dict[int, list] = {}
  for d in devices:
    by_process.setdefault(d.process_index, []).append(d)
  return [d for p in sorted(by_process) for d in sorted(by_process[p], key=lambda d: d.id)
          [device_slice]]


def role_mesh(spec, default: Mesh, devices: Sequence[jax.Device] | None = None,
              where: str = "roles") -> Mesh:
  """The mesh of one role: `default` when spec.devices is empty, else a sub-mesh.

  spec: a `roles.<role>` config section (devices 'a:b', data, fsdp, tensor).
  """
  if not spec.devices:
    return default
  devices = list(jax.devices() if devices is None else devices)
  num_local = len(devices) // len({d.process_index for d in devices})
  chosen = role_devices(parse_device_slice(spec.devices, num_local, f"{where}.devices"),
                        devices)
  try:
    return make_mesh({a: spec[a] for a in MESH_AXES}, chosen)
  except MeshError as e:
    raise MeshError(f"{where}: {e}") from None


def same_mesh(a: Mesh, b: Mesh) -> bool:
  return a is b or (a.shape == b.shape and (a.devices == b.devices).all())


def move_rows(tree, mesh: Mesh, rules):
  """Batch-like arrays ([B, ...]) resharded onto `mesh`, rows over its batch axes."""
  return jax.tree.map(lambda x: jax.device_put(x, batch_sharding(mesh, rules, max(x.ndim, 1))),
                      tree)


def mesh_and_rules(mesh_section, devices=None):
  """(mesh, rules) of a config's `mesh` section: axis sizes and the rules table."""
  rules = rules_from_config(mesh_section.rules)
  mesh = make_mesh({a: mesh_section[a] for a in MESH_AXES}, devices)
  return mesh, rules
