"""Beyond the paper: staleness, the road from online to offline.

  online_ipo_stale<k>_s<seed>   online IPO sampling with parameters k steps old, for
                        each k of `staleness` (k = 0 is Fig. 1's online IPO; offline
                        IPO on the SFT pairs is the k = infinity end), over the
                        study's seeds (the arms drop the _s<seed>)
"""
from __future__ import annotations

from alignment import stats
from alignment.study import arms as A
from alignment.study.experiment import Experiment
from alignment.study.experiments import fig1, rl


class Staleness(Experiment):
  name = "staleness"
  title = "Beyond the paper: staleness, from online to offline"
  needs = {"fig1": "is compared with the Fig. 1 arms"}

  def plan(self, p):
    s = p.s
    for k in s.staleness:
      for seed in p.ablation_seeds():
        p.online(f"online_ipo_stale{k}_s{seed}", s.model, "ipo", s.online.beta, self.group,
                 data=f"online_stale{k}", rl={"rl.staleness": int(k)}, seed=seed,
                 arm=f"online_ipo_stale{k}")

  def section(self, ctx, gate, study):
    arms = self.arms(ctx)
    compared = fig1.against_online_ipo(ctx, arms)
    sentence = ""
    on, off = fig1.online(ctx)[:1], fig1.offline(ctx)[:1]
    if compared and on and off and gate.get("gate_passed"):
      gap = ctx.value(lambda: ctx.peak(off[0]) - ctx.peak(on[0]))
      sentence = fig1.reading(compared, gate)
      if gap.get("estimate") is not None:
        sentence += (f" Offline IPO on the SFT pairs (the k = infinity end) - online IPO: peak "
                     f"{stats.interval_str(gap)} ({A.side(gap)}).")
    return rl.comparison_section(ctx, arms, compared, gate, self.group, [], sentence)


EXPERIMENT = Staleness()
