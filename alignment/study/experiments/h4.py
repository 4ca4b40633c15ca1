"""H4: a non-contrastive loss (Best-of-2: maximum likelihood on the judged winner).

  online_best_of_2            against the proxy PM
  offline_best_of_2           on D_golden
  offline_best_of_2_replay    on online_best_of_2's stream, shuffled
"""
from __future__ import annotations

from alignment.study import arms as A
from alignment.study.experiment import Experiment

ON, OFF, REPLAY = "online_best_of_2", "offline_best_of_2", "offline_best_of_2_replay"


def finding_5(ctx: A.Context, gate: dict):
  if not ctx.has(ON, OFF):
    return None
  parts = [ctx.claim("online Best-of-2 peak - offline Best-of-2 peak > 0",
                     lambda: ctx.peak(ON) - ctx.peak(OFF))]
  if ctx.has(REPLAY):
    parts.append(ctx.claim("2 x replay - online - offline > 0 (offline Best-of-2 on shuffled "
                           "D_online is closer to online than to offline)",
                           lambda: 2 * ctx.peak(REPLAY) - ctx.peak(ON) - ctx.peak(OFF)))
  numbers = {a: A.arm_numbers(ctx, a) for a in (ON, OFF, REPLAY) if a in ctx.data}
  return A.finding(5, "Non-contrastive loss (H4): the gap persists for Best-of-2; offline "
                   "Best-of-2 on shuffled D_online matches online", parts, numbers, gate,
                   "every claim's interval above 0")


class H4(Experiment):
  name = "h4"
  title = "H4 Best-of-2"

  def plan(self, p):
    s, beta = p.s, p.s.online.beta
    p.online(ON, s.model, "best_of_2", beta, self.group)
    p.offline(OFF, s.model, "best_of_2", beta, self.group, data=s.pairs + "_pairs",
              pairs=p.path("pairs", "train"))
    p.offline(REPLAY, s.model, "best_of_2", beta, self.group, data="online_shuffled",
              pairs=p.stream(ON), order="shuffled", deps=(ON,), steps=s.online.steps,
              learning_rate=s.online.learning_rate)

  def findings(self, ctx, gate, study):
    f = finding_5(ctx, gate)
    return [f] if f else []

  def agreement_arms(self, ctx):
    return [ON] if ON in ctx.data else []


EXPERIMENT = H4()
