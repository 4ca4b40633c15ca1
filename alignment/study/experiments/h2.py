"""H2, quality: is it the online policy's better samples that help?

  peak_pairs, final_pairs     two samples per train prompt of the source run's policy
                              (Fig. 1's online IPO, first seed) at its peak evaluation
                              and at its end, golden-labelled
  offline_peak_pairs_s<k>, offline_final_pairs_s<k>   offline IPO on each, over the
                              study's seeds (one pair set each: the seeds vary the
                              training, not the source policy)
"""
from __future__ import annotations

import os

from alignment import layout
from alignment.study import arms as A
from alignment.study import stages as stages_lib
from alignment.study.experiment import Experiment, Section
from alignment.study.experiments import fig1, h1


def generate_policy_pairs(p, out_dir: str, source: str, which: str) -> dict:
  """Two samples per train prompt of `source`'s policy at its peak evaluation (the
  export its evaluation saved there) or at its end, golden-labelled."""
  s, maker = p.s, p.pair_maker()
  if which == "final":
    export, step = p.export(source), s.online.steps
  else:
    points = A.run_points(p.workdir, p.name(source), None)
    step = max(points, key=lambda q: q["golden_win_rate"])["step"]
    export = layout.eval_policy(layout.stage(p.workdir, p.name(source)), step)
  pairs = maker.sampled(maker.policy(export), "train", s.num_pairs, s.seed + 5,
                        f"{which}-policy pairs")
  return {"policy_step": int(step),
          "train": maker.write(os.path.join(out_dir, "train"), pairs, s.seed + 5)}


def finding_3(ctx: A.Context, gate: dict, src: str):
  if not ctx.has("offline_peak_pairs", src):
    return None
  gain = lambda a: ctx.peak(a) - ctx.start(a)
  parts = [ctx.claim("online gain - 2 x gain of offline on the online PEAK policy's pairs > 0 "
                     "(gains over SFT: it barely beats SFT)",
                     lambda: gain(src) - 2 * gain("offline_peak_pairs"),
                     presupposes_advantage=True)]
  if ctx.has("offline_final_pairs"):
    parts.append(ctx.claim("the same with the online FINAL policy's pairs (second row)",
                           lambda: gain(src) - 2 * gain("offline_final_pairs"), counts=False,
                           presupposes_advantage=True))
  numbers = {"online_gain": ctx.value(lambda: gain(src)),
             "peak_pairs_gain": ctx.value(lambda: gain("offline_peak_pairs"))}
  if ctx.has("offline_final_pairs"):
    numbers["final_pairs_gain"] = ctx.value(lambda: gain("offline_final_pairs"))
  numbers["peak_policy_step"] = (stages_lib.stage_summary(ctx.workdir, "peak_pairs")
                                 or {}).get("policy_step")
  return A.finding(3, "Quality (H2): offline training on pairs from the online policy, "
                   "relabelled by the golden judge, barely beats SFT", parts, numbers, gate,
                   "the peak-policy row's interval above 0 (the final-policy row is shown)",
                   advantage=fig1.online_advantage(ctx, gate))


class H2(Experiment):
  name = "h2"
  title = "H2 quality"
  needs = {"fig1": "samples the Fig. 1 online run's policy"}

  def plan(self, p):
    s, source = p.s, fig1.source_run(p.s)
    for which in ("peak", "final"):
      name = f"{which}_pairs"
      p.pair_set(name, self.group,
                 lambda d, w=which: generate_policy_pairs(p, d, source, w),
                 dict(kind="policy", which=which, num=s.num_pairs, labels=s.labels,
                      seed=s.seed), deps=(source,))
      for k in p.ablation_seeds():
        p.offline(f"offline_{which}_pairs_s{k}", s.model, "ipo", s.online.beta, self.group,
                  data=f"{which}_policy_pairs", pairs=p.path(name, "train"), deps=(name,),
                  seed=k, arm=f"offline_{which}_pairs")

  def findings(self, ctx, gate, study):
    f = finding_3(ctx, gate, h1.source_arm(study))
    return [f] if f else []

  def section(self, ctx, gate, study):
    arms = self.arms(ctx)
    return Section(h1.beside_source(ctx, study, arms) if arms else [], table_arms=arms)


EXPERIMENT = H2()
