"""The study's built-in experiments, in the order they are planned and reported
(Fig. 1 first: the others build on it; `judge` after H5, whose sft_<size> stages
its larger PMs reuse), and `resolve`, which turns the names of
`study.experiments` into Experiment objects, a user's modules included.

Each module defines EXPERIMENT, as a user's module does (alignment.study.experiment);
pair_sets defines two, writer and sec6, which share their pair sets and section.
"""
from __future__ import annotations

from alignment import config as config_lib
from alignment.study import experiment as experiment_lib
from alignment.study.experiments import (attribution, fig1, h1, h2, h4, h5, judge, losses,
                                         pair_sets, rl, staleness)

BUILTIN = {e.name: e for e in (
    fig1.EXPERIMENT, attribution.EXPERIMENT, losses.EXPERIMENT, h1.EXPERIMENT, h2.EXPERIMENT, h4.EXPERIMENT,
    pair_sets.WRITER, pair_sets.SEC6, rl.EXPERIMENT, staleness.EXPERIMENT, h5.EXPERIMENT,
    judge.EXPERIMENT)}


def resolve(names) -> list[experiment_lib.Experiment]:
  """The listed experiments in the order they run: built-in ones in BUILTIN's order,
  then a user's in the order listed. Unknown names and unmet `needs` are one
  ConfigError naming the key."""
  names = list(dict.fromkeys(names))
  unknown = [n for n in names if n not in BUILTIN and not experiment_lib.is_module_name(n)]
  if unknown:
    raise config_lib.ConfigError(f"study.experiments: unknown {sorted(unknown)}; choose "
                                 f"from {list(BUILTIN)} or name your own module (a.b or "
                                 "path/to/file.py)")
  out = [e for n, e in BUILTIN.items() if n in names]
  out += [experiment_lib.load_user(n, BUILTIN) for n in names if n not in BUILTIN]
  listed = {e.name for e in out}
  for e in out:
    missing = [n for n in e.needs if n not in listed]
    if missing:
      raise config_lib.ConfigError(
          f"study.experiments: {e.name} {'; '.join(e.needs[n] for n in missing)}; list "
          f"{', '.join(repr(n) for n in missing)} too")
  return out
