"""An experiment of a study, and the registry that finds one by name.

An experiment is a module with one `Experiment` subclass: which stages it adds
to the study's plan, which arms its report section shows, its findings (claims
with intervals and a rule) or its comparisons, and what its section says. The
planner (`alignment.study.plan`) and the report (`alignment.study.report`) know
no experiment by name: they ask the experiments listed in `study.experiments`,
in the order `alignment.study.experiments.resolve` gives (the built-in ones in
their registry's order, then a user's in the order listed).

A user's experiment lives outside the package: list it by module name
(`my_lab.two_betas`, importable from the working directory) or by file
(`path/to/two_betas.py`); the module defines `EXPERIMENT`, an instance of an
`Experiment` subclass. docs/study.md, "Writing an experiment", walks through one.
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import sys
from typing import Optional

from alignment import config as config_lib
from alignment.study import arms as arms_lib


@dataclasses.dataclass
class Section:
  """What an experiment shows in the report and adds to results.json.

  plot_arms: the arms of its budget plot (budget_<group>.png; none: no plot and no
  section); table_arms: its arm table's rows (default: plot_arms); lines: what it
  says between the plot and the table; results: its entries of results.json besides
  the findings, merged by key ("attribution", "ablations", "comparisons",
  "comparison_readings", "judge_axis", "scaling"); figures: more plots of its own, {file name:
  (the name of a function of `alignment.study.plots`, the data it draws)}, drawn
  as plots.<function>(data, path) and shown after its lines (experiments do not
  import plots: no stage's code may reach it, see `stages.code_digest`).
  """
  plot_arms: list[str]
  table_arms: Optional[list[str]] = None
  lines: list[str] = dataclasses.field(default_factory=list)
  results: dict = dataclasses.field(default_factory=dict)
  figures: dict = dataclasses.field(default_factory=dict)  # {file.png: (plots.<fn>, data)}


class Experiment:
  """One experiment: subclass it, set the class attributes, override `plan` and
  whichever report hooks it needs. Every hook but `plan` has a default that does
  nothing or shows the experiment's own arms."""

  name: str = ""            # as listed in study.experiments
  title: str = ""           # its report section's heading
  group: str = ""           # its stages' group and report section (default: name)
  needs: dict[str, str] = {}  # {experiment: what this one takes from it}: listed too
  lead: bool = False        # its section comes before the findings (the attribution)

  def __init__(self):
    self.group = self.group or self.name

  # -- planning ----------------------------------------------------------------
  def check(self, study) -> None:
    """Raises config.ConfigError naming the key when the study's config cannot run it."""

  def plan(self, p) -> None:
    """Adds its stages to the Planner `p` (p.online, p.offline, p.pair_set, ...)."""
    raise NotImplementedError(f"experiment {self.name!r}: plan")

  # -- the report --------------------------------------------------------------
  def setup(self, workdir: str) -> dict:
    """Figures for results.json's setup block (e.g. a model it trains on D_golden)."""
    del workdir
    return {}

  def findings(self, ctx: arms_lib.Context, gate: dict, study) -> list[dict]:
    """Its findings (`arms.finding`): claims with intervals and the rule that votes."""
    del ctx, gate, study
    return []

  def arms(self, ctx: arms_lib.Context) -> list[str]:
    """Its own arms that have data (its stages' group)."""
    return ctx.group_arms(self.group)

  def section(self, ctx: arms_lib.Context, gate: dict, study) -> Section:
    """Its report section; by default its arms, plotted and tabled."""
    del gate, study
    return Section(self.arms(ctx))

  def agreement_arms(self, ctx: arms_lib.Context) -> list[str]:
    """Arms to draw in the study's plot of the proxy on the policy's samples."""
    del ctx
    return []

  def chosen_arms(self, ctx: arms_lib.Context) -> list[str]:
    """Arms to draw in the study's plot of the chosen log-prob over training."""
    return self.arms(ctx)


# ---------------------------------------------------------------------------
# A user's experiment module
# ---------------------------------------------------------------------------


def is_module_name(name: str) -> bool:
  """A name in study.experiments that names a user's module (a.b) or file (x.py)."""
  return name.endswith(".py") or "." in name


def load_user(name: str, taken) -> Experiment:
  """A user's experiment: a module name (importable here) or a .py file; its
  EXPERIMENT's name must not be one of `taken` (the built-in ones)."""
  where = f"study.experiments: {name!r}"
  try:
    if name.endswith(".py"):
      path = os.path.abspath(name)
      if not os.path.exists(path):
        raise config_lib.ConfigError(f"{where}: no such file")
      module_name = "alignment_user_experiment_" + os.path.basename(path)[:-3]
      spec = importlib.util.spec_from_file_location(module_name, path)
      module = importlib.util.module_from_spec(spec)
      sys.modules[module_name] = module
      spec.loader.exec_module(module)
    else:
      if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
      module = importlib.import_module(name)
  except config_lib.ConfigError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise config_lib.ConfigError(f"{where}: cannot import it: {type(e).__name__}: {e}") from e
  experiment = getattr(module, "EXPERIMENT", None)
  if not isinstance(experiment, Experiment):
    raise config_lib.ConfigError(f"{where}: the module defines no EXPERIMENT (an instance of "
                                 "alignment.study.experiment.Experiment)")
  if not experiment.name or experiment.name in taken:
    raise config_lib.ConfigError(f"{where}: its EXPERIMENT.name {experiment.name!r} must be set "
                                 "and differ from the built-in experiments'")
  return experiment
