"""Jitted programs made once per process and reused: a study runs its stages in one
process, and each stage builds samplers, judges and scorers again; equal inputs get
the program already traced and compiled, where a new `jax.jit` would trace, lower
and load it again (about a second each on a CPU, more for a judge).

`shared(make, *key)` returns make(*key), made once for equal keys. The key must hold
everything the program's trace reads (model, config, mesh, rules, shardings): a
program is only as shared as its key is complete. Unhashable keys (rules given as
lists) are not shared but made each time, which is always correct.
"""
from __future__ import annotations

import functools
from typing import Callable, TypeVar

T = TypeVar("T")


def shared(make: Callable[..., T], *key) -> T:
  """make(*key), made once per process for equal (make, key)."""
  try:
    hash(key)
  except TypeError:
    return make(*key)
  return _cached(make, *key)


@functools.lru_cache(maxsize=64)
def _cached(make, *key):
  return make(*key)


def clear() -> None:
  """Forgets every shared program (tests that count traces)."""
  _cached.cache_clear()
