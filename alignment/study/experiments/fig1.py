"""Fig. 1: online against offline IPO at equal KL, and H3 (classification against
generation), which reads the Fig. 1 arms beside every contrastive run.

  online_ipo_s<k>    online IPO against the proxy PM, one run per seed
  offline_ipo_s<k>   offline IPO on D_golden (pairs/train), one run per seed

Both modes can be swept over the same grid of `learning_rates` x `betas` (the
paper pooled each mode over its sweep). The main arm of each mode, at its own
learning rate (online.learning_rate, offline.learning_rate) and online.beta, keeps
the names above; every other point of the grid is an arm of its own,
online_ipo_lr<lr>_b<beta>_s<k> (the part that does not vary is left out of the
name). Finding 1 pools each mode's arms into one envelope and one peak.

Fig. 1's online run of the first seed at `online.beta` is the SOURCE of H1 (its
stream is replayed) and H2 (its policy is sampled); it keeps its evaluated
policies. Other experiments compare their arms with Fig. 1's online IPO
(`against_online_ipo`).
"""
from __future__ import annotations

import numpy as np

from alignment import stats
from alignment.study import arms as A
from alignment.study.experiment import Experiment, Section

CONTRASTIVE = ("ipo", "dpo", "slic")


def grid(study, mode: str) -> list[tuple[float, float, str]]:
  """Fig. 1's arms of one mode: (learning rate, beta, arm name), the main arm first
  (the mode's own learning rate at online.beta, named online_ipo / offline_ipo), then
  the rest of the grid `learning_rates` x `betas` (empty `learning_rates`: the
  mode's own only)."""
  own = study[mode].learning_rate
  rates = list(study.learning_rates) or [own]
  main = (own, study.online.beta)
  out = [(own, study.online.beta, f"{mode}_ipo")]
  for lr in rates:
    for b in study.betas:
      if (lr, b) != main:
        tag = (f"_lr{lr:g}" if len(rates) > 1 else "") + (f"_b{b:g}" if len(study.betas) > 1
                                                          else "")
        out.append((lr, b, f"{mode}_ipo{tag}"))
  return out


def source_run(study, seed=None) -> str:
  """The main online arm's run (default the first seed's): H1 replays each seed's,
  H2 samples the first seed's policy."""
  seed = study.seeds[0] if seed is None else seed
  return f"online_ipo_s{seed}"


def online(ctx: A.Context) -> list[str]:
  """Fig. 1's online IPO arms that have data, the main arm first."""
  return ctx.arm_of("online", "fig1")


def offline(ctx: A.Context) -> list[str]:
  """Fig. 1's offline IPO arms that have data, the main arm first."""
  return ctx.arm_of("offline", "fig1")


def against_online_ipo(ctx: A.Context, arms: list[str]) -> dict:
  """Each arm against Fig. 1's online IPO ({} without it): `arms.versus`, its keys
  named `..._minus_online_ipo`."""
  base = online(ctx)[:1]
  if ctx.boot is None or not base:
    return {}
  return A.versus(ctx, arms, base[0], "online_ipo")


def reading(compared: dict, gate: dict) -> str:
  """One sentence on what comparisons with online IPO show: which arms are above,
  below or indistinguishable from it (peak, and envelope from KL 0), read from the
  intervals only. A failed set-up gate makes it inconclusive, as the findings."""
  if not gate.get("gate_passed"):
    return ("What it shows: inconclusive: the proxy cannot rank the policy's samples "
            "(set-up gate).")
  parts = []
  for what in ("peak", "envelope"):
    by = {}
    for arm, c in compared.items():
      by.setdefault(c["reading"][what], []).append(arm)
    said = [f"{k}{'' if k in ('above', 'below') else ' for'} {', '.join(by[k])}"
            for k in ("above", "below", "no difference detected", A.FEW_SEEDS, "n/a") if k in by]
    parts.append(f"{'peak' if what == 'peak' else 'envelope from KL 0'}: " + "; ".join(said))
  return ("What it shows, against online IPO (95% intervals, Holm's correction over the "
          "section's comparisons): " + ". ".join(parts)
          + ".")


def comparison_lines(compared: dict, sentence: str) -> list[str]:
  """The report's lines for comparisons with online IPO, then their reading."""
  return [f"- {arm} - online IPO: peak {A.fmt(c['peak_minus_online_ipo'])}, envelope from "
          f"KL 0 {A.fmt(c['envelope_minus_online_ipo'])}" for arm, c in compared.items()] + [
              "", sentence, ""]


def online_advantage(ctx: A.Context, gate: dict) -> bool:
  """Does finding 1 show an online advantage: its peak or its envelope claim
  supported (after its correction)? H1-H4's claims that explain the advantage are
  voted only then (`arms.finding`)."""
  f = finding_1(ctx, gate)
  return bool(f) and any(p.get("holm_verdict") == "supported" for p in f["parts"][:2])


def finding_1(ctx: A.Context, gate: dict):
  """Finding 1 on the context's runs, computed once per set of foundations: an
  experiment that ran on the first foundation alone asks whether ITS runs show an
  online advantage (`online_advantage`)."""
  key = ("finding_1", tuple(ctx.foundations()))
  if key not in ctx.memo:
    ctx.memo[key] = _finding_1(ctx, gate)
  return ctx.memo[key]


def _finding_1(ctx: A.Context, gate: dict):
  on, off = online(ctx), offline(ctx)
  if not on or not off:
    return None
  parts = [
      ctx.claim("online peak - offline peak > 0 (each mode pooled over the same learning rates "
                "x betas)",
                lambda: A.pooled_peak(ctx, on) - A.pooled_peak(ctx, off)),
      ctx.claim("online envelope - offline envelope > 0, averaged over KL in [0, K] (K: the "
                "smaller of the two curves' largest KL; the SFT point starts both)",
                lambda: stats.envelope_gap([ctx.cv(a) for a in on], [ctx.cv(a) for a in off])),
      ctx.claim(f"online over-optimises ({on[0]}): min(peak - start, peak - final) > 0",
                lambda: A.rise_and_fall(ctx, on[0])),
      ctx.claim(f"offline over-optimises ({off[0]}): min(peak - start, peak - final) > 0",
                lambda: A.rise_and_fall(ctx, off[0])),
  ]
  numbers = {a: A.arm_numbers(ctx, a) for a in on + off}
  return A.finding(1, "Both over-optimise; online is better at equal KL and has the higher peak",
                   parts, numbers, gate, "every claim's 95% interval above 0")


def finding_4(ctx: A.Context, gate: dict):
  """H3, on the Fig. 1 arms; the chosen log-prob claim over every contrastive run."""
  on, off = online(ctx), offline(ctx)
  if not on or not off or ctx.cv(on[0]).classifier is None:
    return None
  on, off = on[0], off[0]
  contrastive = sorted({r["arm"] for r in ctx.runs if r["algorithm"] in CONTRASTIVE
                        and r["arm"] in ctx.data})
  # The contrastive runs of experiments that ran on the first foundation alone: every
  # claim here is then read on the first foundation's runs.
  ctx = ctx.over(contrastive)
  contrastive = [a for a in contrastive if a in ctx.data]
  parts = [
      ctx.claim("offline final classifier accuracy - online's > 0",
                lambda: ctx.cv(off).classifier[:, -1] - ctx.cv(on).classifier[:, -1]),
      ctx.claim("online peak win rate - offline's > 0 (finding 1's claim: shown, not counted "
                "twice)", lambda: ctx.peak(on) - ctx.peak(off), counts=False),
      ctx.claim("chosen log-probs fall below SFT in every contrastive run: -max(final chosen "
                "log-prob delta) > 0", lambda: -np.max(np.stack(
                    [ctx.cv(a).chosen[:, -1] for a in contrastive]), axis=0)),
      ctx.claim("most steeply offline: online final chosen delta - offline's > 0",
                lambda: ctx.cv(on).chosen[:, -1] - ctx.cv(off).chosen[:, -1]),
  ]
  off_pts = [(p["classifier_accuracy"], p["golden_win_rate"]) for r in ctx.runs
             if r["mode"] == "offline" for p in r["points"][1:]
             if p.get("classifier_accuracy") is not None]
  corr = float(np.corrcoef(np.array(off_pts).T)[0, 1]) if len(off_pts) > 2 else float("nan")
  numbers = {"online_final_classifier": ctx.value(lambda: ctx.cv(on).classifier[:, -1]),
             "offline_final_classifier": ctx.value(lambda: ctx.cv(off).classifier[:, -1]),
             "offline_accuracy_win_rate_correlation": A.r(corr),
             "final_chosen_delta": {a: ctx.value(lambda a=a: ctx.cv(a).chosen[:, -1])
                                    for a in contrastive}}
  return A.finding(4, "Classification vs generation (H3): offline policies classify better, "
                   "online ones generate better; chosen log-probs fall below SFT (contrastive "
                   "runs), most steeply offline", parts, numbers, gate,
                   "every claim's interval above 0; Best-of-2 is left out of the chosen "
                   "log-prob claim (maximum likelihood on the winners raises them by design)")


class Fig1(Experiment):
  name = "fig1"
  title = "Fig. 1: online vs offline IPO"

  def plan(self, p):
    s = p.s
    # The same grid for both modes; each mode's own main point comes first.
    for (lr_on, b_on, on), (lr_off, b_off, off) in zip(grid(s, "online"),
                                                         grid(s, "offline")):
      for k in s.seeds:
        p.online(f"{on}_s{k}", s.model, "ipo", b_on, self.group, seed=k, arm=on,
                 learning_rate=lr_on, save_params=(k == s.seeds[0] and on == "online_ipo"))
        p.offline(f"{off}_s{k}", s.model, "ipo", b_off, self.group, data=s.pairs + "_pairs",
                  pairs=p.path("pairs", "train"), seed=k, arm=off, learning_rate=lr_off)

  def findings(self, ctx, gate, study):
    return [f for f in (finding_1(ctx, gate), finding_4(ctx, gate)) if f is not None]

  def section(self, ctx, gate, study):
    arms = self.arms(ctx)
    main = online(ctx)[:1] + offline(ctx)[:1]
    points = A.law_points(ctx, main)
    return Section(arms, lines=A.rising_lines(ctx, arms) + A.law_lines(ctx, main),
                   figures={"laws_fig1.png": ("plot_laws", points)} if points else {})

  def agreement_arms(self, ctx):
    return online(ctx)[:1] + offline(ctx)[:1]


EXPERIMENT = Fig1()
