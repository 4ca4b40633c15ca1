"""Each size's SFT rate, chosen on held-out SFT loss from a fixed grid (`sft.rates`).

A study that trains policies of several sizes must not let a larger one be an
undertrained one: a rate that suits one width can leave a wider model stuck (the
`scaling` scale's first run: t5-midi's SFT at t5-tiny's rate scaled by width had
gradient norms rising from 3 to 9 and a training loss that stopped falling, and the
criterion stopped it at a held-out loss of 1.56 against t5-tiny's 1.01). With
`sft.rates` = [m_1, .., m_n], each SFT stage of the study is preceded by n PILOT
stages, <sft>_lr<i>: the same SFT (same data, seed, warm-up and constant rate) for
`sft.pilot_steps` steps at its planned rate times m_i. The SFT then runs at the rate
whose pilot ended with the lowest held-out SFT loss (the first listed on a tie; a
pilot whose loss is not finite is never chosen). Nothing else is read: the choice
is made on SFT held-out loss alone, before any alignment run exists.

The chosen factor m carries over to the PMs trained from that SFT's backbone (their
planned rate times m): a width that needed a lower SFT rate gets the same factor on
its PM. Alignment runs keep their planned rates (`Planner.lr_scale`).

Both choices are made when the stage runs (`Stage.resolve`: process 0 reads the
finished pilots' STAGE.json, every process gets its answer) and are recorded in the
stage's STAGE.json under "resolved". The stage's hash covers the grid and the
pilots' hashes, so a changed grid or pilot reruns it.
"""
from __future__ import annotations

import dataclasses
import math

from alignment.study import stages as stages_lib

RULE = ("the rate of the pilot with the lowest final held-out SFT loss (the first listed "
        "on a tie; a non-finite loss is never chosen)")


class RateSearchError(ValueError):
  """A rate search that cannot choose: a pilot unfinished, or every pilot diverged."""


def choose(losses: list[float]) -> int:
  """The index of the lowest finite loss, the first such on a tie (`RULE`)."""
  finite = [(x, i) for i, x in enumerate(losses) if x is not None and math.isfinite(x)]
  if not finite:
    raise RateSearchError(f"no pilot ended with a finite held-out loss ({losses})")
  return min(finite)[1]


def pilot_loss(workdir: str, pilot: str) -> float:
  """A finished pilot's final held-out SFT loss (its summary's eval/loss)."""
  if stages_lib.read_marker(workdir, pilot) is None:
    raise RateSearchError(f"pilot stage {pilot!r} has not finished (no STAGE.json in "
                          f"{workdir})")
  loss = stages_lib.held_out_loss(workdir, pilot)
  return float("nan") if loss is None else loss


@dataclasses.dataclass(frozen=True)
class SftRate:
  """An SFT stage's `resolve`: its rate from its pilots (module docstring).

  pilots: the pilot stages' names, in the grid's order; factors: the grid; rate:
  the SFT's planned rate, which each factor multiplies."""
  pilots: tuple[str, ...]
  factors: tuple[float, ...]
  rate: float

  def __call__(self, workdir: str) -> dict:
    losses = [pilot_loss(workdir, p) for p in self.pilots]
    i = choose(losses)
    return {"overrides": {"optimizer.learning_rate": self.rate * self.factors[i]},
            "factor": self.factors[i], "pilot": self.pilots[i],
            "pilot_losses": {p: l for p, l in zip(self.pilots, losses)},
            "rule": RULE}


def chosen_factor(workdir: str, sft: str) -> float:
  """The factor an SFT stage's rate search chose (its STAGE.json), 1.0 if it had none."""
  info = stages_lib.read_marker(workdir, sft)
  if info is None:
    raise RateSearchError(f"SFT stage {sft!r} has not finished (no STAGE.json in {workdir})")
  return float((info.get("resolved") or {}).get("factor", 1.0))


@dataclasses.dataclass(frozen=True)
class BackboneRate:
  """A PM stage's `resolve`: its planned rate times the factor its backbone's SFT
  chose."""
  sft: str
  rate: float

  def __call__(self, workdir: str) -> dict:
    factor = chosen_factor(workdir, self.sft)
    return {"overrides": {"optimizer.learning_rate": self.rate * factor}, "factor": factor,
            "from": self.sft}
