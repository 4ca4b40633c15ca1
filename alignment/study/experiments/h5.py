"""H5, policy size (larger scales): per extra size of `sizes`, its own SFT and step-0
evaluation, then online and offline IPO. The proxy PM, D_golden and the win-rate
reference (the main SFT policy) are the main size's; the main size's arms are
Fig. 1's.

  sft_<size>, sft_eval_<size>, online_ipo_<size>_s<k>, offline_ipo_<size>_s<k>
  (over the ablation seeds; the arms drop the _s<k>)
"""
from __future__ import annotations

from alignment.study import arms as A
from alignment.study.experiment import Experiment
from alignment.study.experiments import fig1


def finding_6(ctx: A.Context, gate: dict, sizes: list[str], main_model: str):
  rows = []
  for size in sizes:
    if size == main_model:
      on, off = (fig1.online(ctx) or [None])[0], (fig1.offline(ctx) or [None])[0]
    else:
      on, off = f"online_ipo_{size}", f"offline_ipo_{size}"
    if on in ctx.data and off in ctx.data:
      rows.append((size, on, off))
  if len(rows) < 2:
    return None
  parts = []
  for (s1, on1, _), (s2, on2, _) in zip(rows, rows[1:]):
    parts.append(ctx.claim(f"online peak {s2} - {s1} > 0",
                           lambda a=on2, b=on1: ctx.peak(a) - ctx.peak(b)))
  for size, on, off in rows:
    parts.append(ctx.claim(f"{size}: online peak - offline peak > 0",
                           lambda a=on, b=off: ctx.peak(a) - ctx.peak(b),
                           presupposes_advantage=True))
  numbers = {size: {"online": ctx.value(lambda a=on: ctx.peak(a)),
                    "offline": ctx.value(lambda a=off: ctx.peak(a))} for size, on, off in rows}
  return A.finding(6, "Scaling (H5): peak win rate grows with policy size; the online/offline "
                   "gap persists", parts, numbers, gate,
                   "every claim's interval above 0; every size is measured against the same "
                   "reference policy (the main SFT) and trained against the same proxy PM on "
                   "the same D_golden; KL is against each size's own SFT",
                   advantage=fig1.online_advantage(ctx, gate))


class H5(Experiment):
  name = "h5"
  title = "H5 policy size"
  needs = {"fig1": "takes the main size's arms from Fig. 1"}

  def plan(self, p):
    s = p.s
    for size in s.sizes:
      if size == s.model:
        continue
      sft, sft_eval = f"sft_{size}", f"sft_eval_{size}"
      p.sft(size, sft)
      p.sft_eval(sft_eval, size, sft)
      for k in p.ablation_seeds():
        p.online(f"online_ipo_{size}_s{k}", size, "ipo", s.online.beta, self.group, sft=sft,
                 sft_eval=sft_eval, deps=(sft_eval,), seed=k, arm=f"online_ipo_{size}")
        p.offline(f"offline_ipo_{size}_s{k}", size, "ipo", s.online.beta, self.group,
                  data=s.pairs + "_pairs", pairs=p.path("pairs", "train"), sft=sft,
                  sft_eval=sft_eval, deps=(sft_eval,), seed=k, arm=f"offline_ipo_{size}")

  def findings(self, ctx, gate, study):
    f = finding_6(ctx, gate, list(study.sizes), study.model)
    return [f] if f else []


EXPERIMENT = H5()
