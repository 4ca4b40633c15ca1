"""Beyond the paper: RLOO and GRPO beside online and offline IPO, same budget and
evaluation.

  rm                 a Bradley-Terry reward model on D_golden (the PM's pairs, steps
                     and rate; its held-out agreement sits in results.json's setup)
  online_<arm>_s<k>  for each of `rl.arms`: rloo_rm, grpo_rm (rewards of the RM),
                     grpo_pm (the PM's sibling wins), rloo_golden (the golden score),
                     over the ablation seeds (the arms drop the _s<k>)

Each arm is compared with Fig. 1's online IPO on matching seeds: peak and
envelope differences with intervals (Holm over the section's comparisons), and
one sentence on where each arm stands.
"""
from __future__ import annotations

from alignment import config as config_lib
from alignment.study import foundation
from alignment.study.experiment import Experiment, Section
from alignment.study.experiments import fig1

ARMS = {"rloo_rm": ("rloo", "reward"), "grpo_rm": ("grpo", "reward"),
        "grpo_pm": ("grpo", "proxy"), "rloo_golden": ("rloo", "golden")}
JUDGE_STAGE = {"reward": "rm", "proxy": "pm", "golden": ""}


class RL(Experiment):
  name = "rl"
  title = "Beyond the paper: RLOO and GRPO beside online and offline IPO"
  needs = {"fig1": "is compared with the Fig. 1 arms"}

  def check(self, study):
    for arm in study.rl.arms:
      if arm not in ARMS:
        raise config_lib.ConfigError(f"study.rl.arms: unknown {arm!r}; choose from "
                                     f"{sorted(ARMS)}")

  def plan(self, p):
    s = p.s
    p.pm("rm", {**p.pm_overrides(), "head": "reward"}, deps=("sft", "pairs"), sft="sft")
    for arm in s.rl.arms:
      method, judge = ARMS[arm]
      for k in p.ablation_seeds():
        p.online(f"online_{arm}_s{k}", s.model, "ipo", s.online.beta, self.group, judge=judge,
                 judge_stage=JUDGE_STAGE[judge], data=f"online_{judge}", seed=k,
                 arm=f"online_{arm}", learning_rate=s.rl.learning_rate, rl={
                     "rl.method": method, "rl.samples": s.rl.samples, "rl.kl": s.rl.kl,
                     "rl.kl_coef": s.rl.kl_coef,
                     "rl.updates": s.rl.updates if method == "grpo" else 1,
                     "train.write_stream": False})

  def setup(self, workdir):
    rm = foundation.held_out_accuracy(workdir, "rm")
    if not rm:  # the scalar reward model, on the gate's held-out pairs
      return {}
    return {"rm_agreement": rm["agreement"], "rm_agreement_interval": rm["interval"],
            "rm_agreement_pairs": rm["pairs"]}

  def section(self, ctx, gate, study):
    arms = self.arms(ctx)
    compared = fig1.against_online_ipo(ctx, arms)
    lines = []
    if compared and gate.get("rm_agreement") is not None:
      lines = [f"- reward model's agreement on held-out SFT pairs (n="
               f"{gate['rm_agreement_pairs']}): {gate['rm_agreement']} "
               f"{gate['rm_agreement_interval']} (the proxy PM's: "
               f"{gate.get('proxy_agreement')} {gate.get('proxy_agreement_interval')})"]
    return comparison_section(ctx, arms, compared, gate, self.group, lines)


def comparison_section(ctx, arms: list[str], compared: dict, gate: dict, group: str,
                       lines: list[str], sentence: str = "") -> Section:
  """A section of arms compared with Fig. 1's online IPO, drawn beside Fig. 1's online
  and offline IPO: the differences, their reading, the table."""
  beside = list(dict.fromkeys(fig1.online(ctx)[:1] + arms + fig1.offline(ctx)[:1]))
  if not arms:
    return Section([])
  if not compared:
    return Section(beside, table_arms=arms)
  sentence = sentence or fig1.reading(compared, gate)
  return Section(beside, lines=lines + fig1.comparison_lines(compared, sentence),
                 results={"comparisons": {group: compared},
                          "comparison_readings": {group: sentence}})


EXPERIMENT = RL()
