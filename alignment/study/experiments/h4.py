"""H4: a non-contrastive loss (Best-of-2: maximum likelihood on the judged winner).

  online_best_of_2_s<k>            against the proxy PM
  offline_best_of_2_s<k>           on D_golden
  offline_best_of_2_replay_s<k>    on online_best_of_2_s<k>'s stream, shuffled
  (over the ablation seeds; the arms drop the _s<k>)
"""
from __future__ import annotations

from alignment.study import arms as A
from alignment.study.experiment import Experiment
from alignment.study.experiments import fig1

ON, OFF, REPLAY = "online_best_of_2", "offline_best_of_2", "offline_best_of_2_replay"


def finding_5(ctx: A.Context, gate: dict):
  if not ctx.has(ON, OFF):
    return None
  parts = [ctx.claim("online Best-of-2 peak - offline Best-of-2 peak > 0",
                     lambda: ctx.peak(ON) - ctx.peak(OFF), presupposes_advantage=True)]
  if ctx.has(REPLAY):
    parts.append(ctx.claim("2 x replay - online - offline > 0 (offline Best-of-2 on shuffled "
                           "D_online is closer to online than to offline)",
                           lambda: 2 * ctx.peak(REPLAY) - ctx.peak(ON) - ctx.peak(OFF),
                           presupposes_advantage=True))
  numbers = {a: A.arm_numbers(ctx, a) for a in (ON, OFF, REPLAY) if a in ctx.data}
  return A.finding(5, "Non-contrastive loss (H4): the gap persists for Best-of-2; offline "
                   "Best-of-2 on shuffled D_online matches online", parts, numbers, gate,
                   "every claim's interval above 0", advantage=fig1.online_advantage(ctx, gate))


class H4(Experiment):
  name = "h4"
  title = "H4 Best-of-2"
  needs = {"fig1": "votes only where Fig. 1 shows an online advantage"}

  def plan(self, p):
    s, beta = p.s, p.s.online.beta
    for k in p.ablation_seeds():
      on = f"{ON}_s{k}"
      p.online(on, s.model, "best_of_2", beta, self.group, seed=k, arm=ON)
      p.offline(f"{OFF}_s{k}", s.model, "best_of_2", beta, self.group, data=s.pairs + "_pairs",
                pairs=p.path("pairs", "train"), seed=k, arm=OFF)
      p.offline(f"{REPLAY}_s{k}", s.model, "best_of_2", beta, self.group,
                data="online_shuffled", pairs=p.stream(on), order="shuffled", deps=(on,),
                steps=s.online.steps, learning_rate=s.online.learning_rate, seed=k, arm=REPLAY)

  def findings(self, ctx, gate, study):
    f = finding_5(ctx, gate)
    return [f] if f else []

  def agreement_arms(self, ctx):
    return [ON] if ON in ctx.data else []


EXPERIMENT = H4()
