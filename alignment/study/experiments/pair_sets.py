"""The pair sets: offline IPO on pair sets other than D_golden.

  writer   writer_pairs + offline_writer_pairs_s<k>: the writer's pairs instead of D_golden
           (the ablation of D_golden's source)
  sec6     the paper's section 6: writer_pairs, gap_pairs (the widest-gap half of 2N
           writer pairs), mixed_pairs (one SFT sample, one writer response), and
           offline runs on each over the ablation seeds (arms offline_<kind>_pairs)

Both report in one section (group "sec6"); a pair set both list is planned once,
and the kind that IS D_golden (study.pairs) is Fig. 1's offline arm, not planned.
"""
from __future__ import annotations

import os

from alignment import config as config_lib
from alignment.study import arms as A
from alignment.study import foundation
from alignment.study.experiment import Experiment, Section
from alignment.study.experiments import fig1


def generate(p, out_dir: str, kind: str) -> dict:
  s, maker = p.s, p.pair_maker()
  pairs = maker.of_kind(kind, p.export("sft"), s.num_pairs, foundation.pair_seed(s, kind))
  return {"train": maker.write(os.path.join(out_dir, "train"), pairs, s.seed + 4)}


def offline_arm(ctx: A.Context, kind: str, pairs_kind: str):
  """The offline arm trained on pair sets of `kind` (D_golden's kind: Fig. 1's)."""
  return (fig1.offline(ctx) or [None])[0] if kind == pairs_kind else f"offline_{kind}_pairs"


def finding_7(ctx: A.Context, gate: dict, pairs_kind: str):
  base, gap, mixed = (offline_arm(ctx, "writer", pairs_kind), "offline_gap_pairs",
                      offline_arm(ctx, "mixed", pairs_kind))
  if not ctx.has(gap) or base not in ctx.data or mixed not in ctx.data:
    return None
  parts = [
      ctx.claim("mixed + writer - 2 x wide-gap > 0 (a wider quality gap gains less than half "
                "of what one SFT response gains)",
                lambda: ctx.peak(mixed) + ctx.peak(base) - 2 * ctx.peak(gap)),
      ctx.claim("one response from SFT - writer pairs > 0", lambda: ctx.peak(mixed) -
                ctx.peak(base)),
      ctx.claim("one response from SFT - wide-gap pairs > 0", lambda: ctx.peak(mixed) -
                ctx.peak(gap)),
  ]
  arms = list(dict.fromkeys([base, gap, mixed] + fig1.offline(ctx)[:1]))
  numbers = {a: A.arm_numbers(ctx, a) for a in arms}
  return A.finding(7, "Data sets (section 6): a wider quality gap does not help; making one "
                   "response on-policy (sampled from SFT) helps most", parts, numbers, gate,
                   "every claim's interval above 0 (base: offline on the writer's pairs; the "
                   "fully on-policy D_golden is shown beside them)")


def ablation(ctx: A.Context, pairs_kind: str) -> dict:
  """Offline on D_golden against offline on each other pair set: peak differences."""
  if ctx.boot is None or not fig1.offline(ctx):
    return {}
  base = fig1.offline(ctx)[0]
  out = {}
  for kind in ("writer", "mixed", "gap"):
    arm = f"offline_{kind}_pairs"
    if kind != pairs_kind and arm in ctx.data:
      out[f"{pairs_kind}_minus_{kind}_offline_peak"] = ctx.value(
          lambda a=arm: ctx.peak(base) - ctx.peak(a))
  return out


class PairSets(Experiment):
  title = "Pair sets: the writer ablation and section 6"
  group = "sec6"
  needs = {"fig1": "compares each pair set with Fig. 1's offline IPO on D_golden"}

  def __init__(self, name: str, kinds: tuple[str, ...]):
    self.name, self.kinds = name, kinds
    super().__init__()

  def check(self, study):
    if study.import_dir:
      raise config_lib.ConfigError(foundation.NO_WRITER_SCORES)

  def plan(self, p):
    s = p.s
    for kind in self.kinds:
      name = f"{kind}_pairs"
      if kind == s.pairs or p.planned(name):  # D_golden itself, or planned by the other
        continue
      p.pair_set(name, self.group, lambda d, k=kind: generate(p, d, k),
                 dict(kind=kind, num=s.num_pairs, labels=s.labels, seed=s.seed,
                      redraws=s.tie_redraws), deps=("sft",))
      for k in p.ablation_seeds():
        p.offline(f"offline_{kind}_pairs_s{k}", s.model, "ipo", s.online.beta, self.group,
                  data=f"{kind}_pairs", pairs=p.path(name, "train"), deps=(name,), seed=k,
                  arm=f"offline_{kind}_pairs")

  def findings(self, ctx, gate, study):
    f = finding_7(ctx, gate, study.pairs)
    return [f] if f else []

  def section(self, ctx, gate, study):
    arms = self.arms(ctx)
    if not arms:
      return Section([])
    ablations = ablation(ctx, study.pairs)
    return Section(list(dict.fromkeys(fig1.offline(ctx)[:1] + arms)),
                   lines=[f"- {k.replace('_', ' ')}: {A.fmt(v)}" for k, v in ablations.items()]
                   + [""], results={"ablations": ablations})


WRITER = PairSets("writer", ("writer",))
EXPERIMENT = SEC6 = PairSets("sec6", ("writer", "gap", "mixed"))
