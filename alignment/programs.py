"""Programs and fixed arrays made once per process and reused: a study runs its stages
in one process, and each stage builds its train step, samplers, judges, scorers and
evaluation references again; equal inputs get what was already made, where a new
`jax.jit` would trace, lower and load it again (about a second each on a CPU, more
for a judge or a train step).

`shared(make, *key)` returns make(*key), made once for equal keys (at most 64 kept).
`Memo(size)` is the same guard for anything a caller makes with a closure:
`memo.get(key, make)` returns make(), or what it returned for an equal key. The key
must hold everything the result is made from (model, config, mesh, rules,
shardings, the checksum of the parameters it was computed with): a program is only as
shared as its key is complete. A key that is None or unhashable (rules given as lists)
is not remembered but made each time, which is always correct. `clear()` forgets
everything (tests that count traces and compilations).
"""
from __future__ import annotations

import collections
from typing import Callable, Hashable, Optional, TypeVar

import jax
import numpy as np

T = TypeVar("T")


class Memo:
  """A bounded, least-recently-used memo of what closures made for equal keys.

  read_only: numpy arrays in a remembered value are made read-only, so that no
  caller can change what the next one is given.
  """
  _ALL: "list[Memo]" = []

  def __init__(self, size: int, read_only: bool = False):
    self.size, self.read_only = size, read_only
    self._entries: "collections.OrderedDict[Hashable, object]" = collections.OrderedDict()
    Memo._ALL.append(self)

  def get(self, key: Optional[Hashable], make: Callable[[], T]) -> T:
    if key is None:
      return make()
    try:
      hash(key)
    except TypeError:
      return make()
    if key in self._entries:
      self._entries.move_to_end(key)
      return self._entries[key]
    value = make()
    if self.read_only:
      for leaf in jax.tree.leaves(value):
        if isinstance(leaf, np.ndarray):
          leaf.setflags(write=False)
    self._entries[key] = value
    while len(self._entries) > self.size:
      self._entries.popitem(last=False)
    return value

  def clear(self) -> None:
    self._entries.clear()

  def __len__(self) -> int:
    return len(self._entries)


_PROGRAMS = Memo(64)


def shared(make: Callable[..., T], *key) -> T:
  """make(*key), made once per process for equal (make, key)."""
  return _PROGRAMS.get((make, *key), lambda: make(*key))


def clear() -> None:
  """Forgets every shared program and every memo's entries."""
  for memo in Memo._ALL:  # pylint: disable=protected-access
    memo.clear()
