"""H1, coverage: Fig. 1's online stream D_online replayed offline.

  replay_ordered      the first seed's stream in its online order: the online run
                      itself, to the bit (a determinism check of its training
                      statistics, the tandem effect; not evaluated)
  replay_window<k>_s<seed>   shuffled within windows of k batches (`h1_windows`)
  replay_shuffled_s<seed>    shuffled whole

Each of Fig. 1's online IPO seeds (at online.beta) is replayed with its own seed,
loss, learning rate and steps: a replay differs from its source run only in
where its pairs come from, and the arms compare on matching seeds.
"""
from __future__ import annotations

import re

import numpy as np

from alignment.study import arms as A
from alignment.study.experiment import Experiment, Section
from alignment.study.experiments import fig1


def tandem_check(workdir: str, source: str) -> dict:
  """The ordered replay's training statistics against the source run's: equal to 0.1%,
  and a one-batch shift breaks the match (else the check proves nothing)."""
  a, b = A.training_stats(workdir, source), A.training_stats(workdir, "replay_ordered")
  n = min(len(a.get("loss", [])), len(b.get("loss", [])))
  rel = max(float(np.max(np.abs(a[k][:n] - b[k][:n]) / np.maximum(np.abs(a[k][:n]), 1e-6)))
            for k in a) if n else float("nan")
  shift = float(np.max(np.abs(a["loss"][1:n] - b["loss"][:n - 1]) /
                       np.maximum(np.abs(a["loss"][1:n]), 1e-6))) if n > 1 else float("nan")
  return {"max_relative_difference_ordered_replay": A.r(rel, 8),
          "max_relative_difference_shifted_one_batch": A.r(shift, 4),
          "passes": bool(rel < 1e-3 and shift > 1e-3)}


def finding_2(ctx: A.Context, gate: dict, source_arm: str, workdir: str, first_source: str):
  if not ctx.has("replay_shuffled", source_arm):
    return None
  off = fig1.offline(ctx)
  if not off:
    return None
  src, off = source_arm, off[0]
  parts = [
      ctx.claim("online peak - shuffled replay peak > 0 (the online order's coverage is lost "
                "when shuffled; matching seeds)", lambda: ctx.peak(src) -
                ctx.peak("replay_shuffled"), presupposes_advantage=True),
      ctx.claim("online + offline - 2 x shuffled > 0 (the shuffled replay gains less than half "
                "of online's gain over offline)",
                lambda: ctx.peak(src) + ctx.peak(off) - 2 * ctx.peak("replay_shuffled"),
                presupposes_advantage=True),
  ]
  windows = sorted((int(a[len("replay_window"):]), a) for a in ctx.data
                   if re.fullmatch(r"replay_window\d+", a))
  numbers = {"tandem_check": tandem_check(workdir, first_source),
             "online_peak": ctx.value(lambda: ctx.peak(src)),
             "offline_peak": ctx.value(lambda: ctx.peak(off)),
             "shuffled_peak": ctx.value(lambda: ctx.peak("replay_shuffled")),
             "window_peaks": {str(k): ctx.value(lambda a=a: ctx.peak(a)) for k, a in windows}}
  return A.finding(2, "Coverage (H1): shuffled D_online gains little over offline; the online "
                   "order matters (ordered replay = online is a determinism check)", parts,
                   numbers, gate, "both claims' intervals above 0; the tandem check (ordered "
                   "replay's training statistics within 0.1% of the online run's, a one-batch "
                   "shift breaking it) is reported, not voted",
                   advantage=fig1.online_advantage(ctx, gate))


def source_arm(study) -> str:
  """The Fig. 1 online arm H1 replays and H2 samples (the main arm)."""
  return fig1.grid(study, "online")[0][2]


def beside_source(ctx: A.Context, study, arms: list[str]) -> list[str]:
  """An H1 or H2 plot's arms: the source arm and Fig. 1's offline IPO, then its own."""
  return [source_arm(study)] + fig1.offline(ctx)[:1] + arms


class H1(Experiment):
  name = "h1"
  title = "H1 coverage: D_online replayed"
  needs = {"fig1": "replays the Fig. 1 online run"}

  def plan(self, p):
    s, beta = p.s, p.s.online.beta
    for i, k in enumerate(p.ablation_seeds()):
      source = fig1.source_run(s, k)
      stream = p.stream(source)
      replay = dict(deps=(source,), steps=s.online.steps, learning_rate=s.online.learning_rate,
                    seed=k)
      if i == 0:
        p.offline("replay_ordered", s.model, "ipo", beta, self.group, data="online_ordered",
                  pairs=stream, order="ordered", evaluate=False, **replay)
      for w in s.h1_windows:
        p.offline(f"replay_window{w}_s{k}", s.model, "ipo", beta, self.group,
                  data=f"online_window{w}", pairs=stream, order="window", window=w,
                  arm=f"replay_window{w}", **replay)
      p.offline(f"replay_shuffled_s{k}", s.model, "ipo", beta, self.group,
                data="online_shuffled", pairs=stream, order="shuffled", arm="replay_shuffled",
                **replay)

  def findings(self, ctx, gate, study):
    f = finding_2(ctx, gate, source_arm(study), ctx.workdir, fig1.source_run(study))
    return [f] if f else []

  def section(self, ctx, gate, study):
    arms = self.arms(ctx)
    return Section(beside_source(ctx, study, arms) if arms else [], table_arms=arms)

  def chosen_arms(self, ctx):
    return [a for a in self.arms(ctx) if not a.startswith("replay_window")]


EXPERIMENT = H1()
