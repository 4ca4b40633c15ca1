"""H5, scaling: policy size and proxy size, read through Gao et al. 2022's laws.

Two axes, each with online and offline IPO over the ablation seeds:

  policy axis   every size of `sizes`: its own SFT (`Planner.sized`: the same SFT
                task, trained to the same criterion where `sft.criterion` is on, its
                rates by `size_lr`), its step-0 evaluation, then online IPO against
                the study's proxy PM and offline IPO on D_golden. Every size is judged
                by the same golden judge against the same reference policy (the main
                SFT); KL is against each size's own SFT. The study's `model` is Fig.
                1's arms.
  proxy axis    at the study's policy, online IPO against the PM of every size of
                `scaling.pm_sizes` (`Planner.pm_of`: on D_golden, from that size's own
                SFT backbone), each with its agreement on the gate's held-out pairs;
                the study's PM (Fig. 1's online IPO) is the axis's point at `model`.
                Offline IPO does not read a PM: Fig. 1's offline IPO is every point's.

  sft_<size>, sft_eval_<size>, online_ipo_<size>_s<k>, offline_ipo_<size>_s<k>
  pm_<size>, online_ipo_pm_<size>_s<k>      (the arms drop the _s<k>)

Every arm's golden-score curve is fitted with Gao et al.'s RL law (`arms.law`); what
the findings compare is each arm's FITTED BEST: the golden score at the fitted curve's
highest point within the arm's reach (its peak where it turns down before the last
evaluated KL, else the last evaluated KL), per replicate column, so its interval
carries the seeds, the prompts and the foundation as every other. It is a smoothed
peak: less biased upwards than the highest of noisy points.

  finding 6 (policy size)  the online fitted best rises from each size to the next;
                           online above offline at each size (presupposes finding
                           1's advantage); the gap's change with size is shown
  finding 8 (proxy size)   with each larger PM the online fitted best rises, and
                           beta falls (it over-optimises later: Gao et al.)

Each axis has a SET-UP CHECK, like the proxy gate: a finding whose check fails is
inconclusive and says why. Policy axis: no larger size's SFT ends at a higher held-out
SFT loss than the next smaller size's (else a larger policy is an undertrained one and
the axis measures the SFT recipe). Proxy axis: no larger PM's agreement with the golden
judge on the gate's held-out pairs lies below the next smaller PM's 95% interval (else
the axis does not vary the proxy's quality). Both read set-up figures alone, never an
alignment outcome.

The section tables each axis (parameters, the SFT's rate, criterion and golden score or the
PM's agreement, alpha, beta, the fitted peak's KL, the fitted best, online - offline),
fits alpha and beta log-linearly in the parameter count (`laws.loglinear`, per
decade), and draws scaling.png (`plots.plot_scaling`) and laws_h5.png.
"""
from __future__ import annotations

import numpy as np

from alignment import laws
from alignment.study import arms as A
from alignment.study import foundation
from alignment.study import stages as stages_lib
from alignment.study.experiment import Experiment, Section
from alignment.study.experiments import fig1


def policy_arms(size: str) -> tuple[str, str]:
  return f"online_ipo_{size}", f"offline_ipo_{size}"


def pm_arm(pm: str) -> str:
  return f"online_ipo_{pm}"


def params(size: str, head: str = "lm") -> int:
  """A zoo model's parameter count (`zoo.count_params`: shapes only, once per process)."""
  from alignment.models import zoo  # pylint: disable=g-import-not-at-top
  return zoo.count_params(zoo.get(size), head)


def policy_rows(ctx: A.Context, study) -> list[dict]:
  """The policy axis's sizes that have both arms, smallest first."""
  rows = []
  for size in study.sizes:
    if size == study.model:
      on, off = (fig1.online(ctx) or [None])[0], (fig1.offline(ctx) or [None])[0]
      sft = "sft"
    else:
      (on, off), sft = policy_arms(size), f"sft_{size}"
    if on in ctx.data and off in ctx.data:
      rows.append(dict(size=size, online=on, offline=off, sft=sft, params=params(size)))
  return sorted(rows, key=lambda r: r["params"])


def proxy_rows(ctx: A.Context, study) -> list[dict]:
  """The proxy axis: the study's PM and every `scaling.pm_sizes` PM whose online arm
  has data, smallest PM first (the offline arm is Fig. 1's for all)."""
  if not study.scaling.pm_sizes:
    return []
  off = (fig1.offline(ctx) or [None])[0]
  rows = [dict(size=study.model, pm="pm", online=(fig1.online(ctx) or [None])[0])]
  rows += [dict(size=s, pm=f"pm_{s}", online=pm_arm(f"pm_{s}")) for s in study.scaling.pm_sizes
           if s != study.model]
  rows = [dict(r, offline=off, params=params(r["size"], "pairwise")) for r in rows
          if r["online"] in ctx.data and off in ctx.data]
  return sorted(rows, key=lambda r: r["params"]) if len(rows) >= 2 else []


def _has_laws(ctx: A.Context, rows: list[dict]) -> bool:
  return all(A.law_fit(ctx, r[k]) is not None for r in rows for k in ("online", "offline"))


def policy_setup(workdir: str, rows: list[dict]):
  """The policy axis's set-up check: each larger size's SFT reached a held-out SFT
  loss no higher than the next smaller size's, so that no larger policy is an
  undertrained one. The reason it fails (None when it holds, or no loss is known)."""
  losses = [stages_lib.held_out_loss(workdir, r["sft"]) for r in rows]
  bad = [f"the {b['size']} SFT's held-out loss {lb:.4g} is above the {a['size']} SFT's "
         f"{la:.4g}" for a, b, la, lb in zip(rows, rows[1:], losses, losses[1:])
         if la is not None and lb is not None and lb > la]
  return ("; ".join(bad) + ": a larger policy is undertrained, so the axis measures the "
          "SFT recipe, not size") if bad else None


def proxy_setup(workdir: str, rows: list[dict]):
  """The proxy axis's set-up check: each larger PM agrees with the golden judge on the
  gate's held-out pairs no less than the next smaller PM, to within that one's 95%
  interval (its agreement is not below the smaller's lower bound), so that the axis
  varies the proxy's quality. The reason it fails (None when it holds)."""
  acc = [foundation.held_out_accuracy(workdir, r["pm"]) for r in rows]
  bad = [f"the {b['size']} PM agrees {y['agreement']:.3f}, below the {a['size']} PM's "
         f"{x['agreement']:.3f} [{x['interval'][0]:.3f}, {x['interval'][1]:.3f}]"
         for a, b, x, y in zip(rows, rows[1:], acc, acc[1:])
         if x and y and y["agreement"] < x["interval"][0]]
  return ("; ".join(bad) + ": a larger proxy is a worse one, so the axis does not measure "
          "a better proxy") if bad else None


def finding_6(ctx: A.Context, gate: dict, study):
  rows = policy_rows(ctx, study)
  if len(rows) < 2 or not _has_laws(ctx, rows):
    return None
  best = lambda arm: A.law_best(ctx, arm)
  gap = lambda r: best(r["online"]) - best(r["offline"])
  parts = [ctx.claim(f"online fitted best {b['size']} - {a['size']} > 0",
                     lambda a=a, b=b: best(b["online"]) - best(a["online"]))
           for a, b in zip(rows, rows[1:])]
  parts += [ctx.claim(f"{r['size']}: online fitted best - offline's > 0", lambda r=r: gap(r),
                      presupposes_advantage=True) for r in rows]
  parts += [ctx.claim(f"the online - offline gap narrows from {a['size']} to {b['size']}: "
                      "gap(smaller) - gap(larger) > 0 (shown)",
                      lambda a=a, b=b: gap(a) - gap(b), counts=False)
            for a, b in zip(rows, rows[1:])]
  numbers = {r["size"]: {"params": r["params"],
                         "online_fitted_best": ctx.value(lambda r=r: best(r["online"])),
                         "offline_fitted_best": ctx.value(lambda r=r: best(r["offline"]))}
             for r in rows}
  return A.finding(6, "Scaling (H5): the peak rises with policy size; the online/offline gap "
                   "persists", parts, numbers, gate,
                   "every claim's interval above 0; peaks are fitted bests (Gao et al.'s RL "
                   "law through each arm's golden-score curve, at its highest point within "
                   "reach); every size is judged by the same golden judge against the same "
                   "reference policy and trained against the same proxy PM on the same "
                   "D_golden; KL is against each size's own SFT; set-up check: no larger "
                   "size's SFT ends at a higher held-out SFT loss than a smaller one's",
                   advantage=fig1.online_advantage(ctx, gate),
                   setup=policy_setup(ctx.workdir, rows))


def finding_8(ctx: A.Context, gate: dict, study):
  rows = proxy_rows(ctx, study)
  if len(rows) < 2 or any(A.law_fit(ctx, r["online"]) is None for r in rows):
    return None
  best = lambda arm: A.law_best(ctx, arm)
  beta = lambda arm: A.law_fit(ctx, arm).beta
  parts = []
  for a, b in zip(rows, rows[1:]):
    parts.append(ctx.claim(f"online fitted best with the {b['size']} PM - with the "
                           f"{a['size']} PM > 0", lambda a=a, b=b: best(b["online"]) -
                           best(a["online"])))
    parts.append(ctx.claim(f"beta with the {a['size']} PM - with the {b['size']} PM > 0 "
                           "(the larger proxy over-optimises later)",
                           lambda a=a, b=b: beta(a["online"]) - beta(b["online"])))
  numbers = {r["size"]: {"pm": r["pm"], "params": r["params"],
                         "online_fitted_best": ctx.value(lambda r=r: best(r["online"])),
                         "beta": ctx.value(lambda r=r: beta(r["online"]))} for r in rows}
  return A.finding(8, "Proxy size (Gao et al. 2022): online IPO against a larger proxy PM "
                   "peaks higher and over-optimises later", parts, numbers, gate,
                   "every claim's interval above 0; one policy (the study's), each PM on the "
                   "same D_golden from its own size's SFT; fitted bests and beta from Gao "
                   "et al.'s RL law through each arm's golden-score curve; set-up check: "
                   "no larger PM agrees with the golden judge on the held-out pairs below "
                   "a smaller PM's 95% interval", setup=proxy_setup(ctx.workdir, rows))


def axis_numbers(ctx: A.Context, workdir: str, rows: list[dict], axis: str) -> list[dict]:
  """Each row's laws and fitted bests with intervals, and what the axis varies: the
  SFT's criterion and golden score (policy), the PM's held-out agreement (proxy)."""
  out = []
  best = lambda arm: A.law_best(ctx, arm)
  for r in rows:
    row = {"size": r["size"], "params": r["params"], "online": r["online"],
           "offline": r["offline"]}
    for mode in ("online", "offline"):
      law = A.law(ctx, r[mode])
      if law:
        row[mode + "_law"] = {k: law[k] for k in ("alpha", "beta", "peak_kl", "r2")}
        row[mode + "_fitted_best"] = ctx.value(lambda a=r[mode]: best(a))
    if "online_law" in row and "offline_law" in row:
      row["online_minus_offline"] = ctx.value(lambda r=r: best(r["online"]) -
                                              best(r["offline"]))
    if axis == "policy":
      got = stages_lib.stage_summary(workdir, r["sft"]) or {}
      marker = stages_lib.read_marker(workdir, r["sft"]) or {}
      row["sft"] = {"learning_rate": (marker.get("config") or {}).get(
                        "optimizer", {}).get("learning_rate"),
                    "rate_factor": (marker.get("resolved") or {}).get("factor"),
                    "steps_trained": got.get("steps_trained"),
                    "criterion_fired": got.get("criterion_fired"),
                    "held_out_loss": A.r(got.get("eval/loss"), 4),
                    "golden_score": ctx.value(lambda r=r: ctx.cv(r["online"]).score[:, 0])}
    else:
      acc = foundation.held_out_accuracy(workdir, r["pm"])
      if acc is not None:
        row["agreement"] = acc
      row["pm"] = r["pm"]
    out.append(row)
  return out


def trend(ctx: A.Context, rows: list[dict]) -> dict:
  """alpha and beta of the online arms against log10(parameters): the slope per decade
  of size with its interval (`laws.loglinear` on every replicate column)."""
  if len(rows) < 2:
    return {}
  x = np.array([r["params"] for r in rows], float)
  out = {}
  for key in ("alpha", "beta"):
    y = lambda: np.stack([getattr(A.law_fit(ctx, r["online"]), key) for r in rows], axis=-1)
    out[f"online_{key}_per_decade"] = ctx.value(lambda y=y: laws.loglinear(x, y())[1])
  return out


def _row_line(r: dict, axis: str) -> str:
  f = lambda row, k: A.fmt(row[k]) if k in row else "-"
  law = lambda m, k: A.fmt(r[m + "_law"][k]) if m + "_law" in r else "-"
  if axis == "policy":
    s = r["sft"]
    rate = "-" if s.get("learning_rate") is None else f"{s['learning_rate']:.3g}"
    if s.get("rate_factor") is not None:
      rate += f" (x{s['rate_factor']:g})"
    what = (f"{rate} | "
            f"{s['steps_trained'] or '-'}{' (criterion)' if s['criterion_fired'] else ''} | "
            f"{'-' if s['held_out_loss'] is None else s['held_out_loss']} | "
            f"{A.fmt(s['golden_score'])}")
  else:
    a = r.get("agreement") or {}
    what = (f"{a['agreement']} [{a['interval'][0]}, {a['interval'][1]}]" if a else "-")
  return (f"| {r['size']} | {r['params']:,} | {what} | {law('online', 'alpha')} | "
          f"{law('online', 'beta')} | {law('online', 'peak_kl')} | {f(r, 'online_fitted_best')} "
          f"| {f(r, 'offline_fitted_best')} | {f(r, 'online_minus_offline')} |")


def lines(block: dict) -> list[str]:
  """The section's tables: the policy axis, then the proxy axis, then the trends."""
  out = ["Gao et al.'s RL law, d (alpha - beta ln d) with d = sqrt(KL), fitted through "
         "each arm's golden score gained over its start; the fitted best is the golden "
         "score at the fitted curve's highest point within the arm's reach (95% intervals "
         "throughout).", ""]
  cols = ("| online alpha | online beta | online fitted peak KL | online fitted best | "
          "offline fitted best | online - offline |")
  if block["policy"]:
    out += ["Policy axis (each size its own SFT; the study's proxy PM; the main SFT as "
            "reference):", "",
            "| policy | parameters | SFT rate (grid factor) | SFT steps | SFT held-out loss | "
            "SFT golden score " + cols,
            "|---|---|---|---|---|---" + "|---" * 6 + "|"]
    out += [_row_line(r, "policy") for r in block["policy"]] + [""]
  if block["proxy"]:
    out += ["Proxy axis (the study's policy; each PM on D_golden from its own size's SFT; "
            "Fig. 1's offline IPO for every row):", "",
            "| PM | parameters | agreement on held-out SFT pairs " + cols,
            "|---|---|---" + "|---" * 6 + "|"]
    out += [_row_line(r, "proxy") for r in block["proxy"]] + [""]
  for axis in ("policy", "proxy"):
    for k, v in block["trend"].get(axis, {}).items():
      out.append(f"- {axis} axis, {k.replace('_', ' ')} of parameters: {A.fmt(v)}")
  return out + [""]


class H5(Experiment):
  name = "h5"
  title = "H5 scaling: policy size and proxy size"
  needs = {"fig1": "takes the study's size's arms from Fig. 1"}

  def check(self, study):
    from alignment import config as config_lib  # pylint: disable=g-import-not-at-top
    from alignment.models import zoo  # pylint: disable=g-import-not-at-top
    for key, sizes in (("sizes", study.sizes), ("scaling.pm_sizes", study.scaling.pm_sizes)):
      bad = [x for x in sizes if x not in zoo.names()]
      if bad or len(set(sizes)) != len(sizes):
        raise config_lib.ConfigError(f"study.{key}={list(sizes)}: each a zoo model, once "
                                     f"(the zoo has {zoo.names()})")

  def plan(self, p):
    s = p.s
    for size in s.sizes:
      if size == s.model:
        continue
      sft, sft_eval = p.sized(size)
      lr = p.lr_scale(size)
      on, off = policy_arms(size)
      for k in p.ablation_seeds():
        p.online(f"{on}_s{k}", size, "ipo", s.online.beta, self.group, sft=sft,
                 sft_eval=sft_eval, deps=(sft_eval,), seed=k, arm=on,
                 learning_rate=s.online.learning_rate * lr)
        p.offline(f"{off}_s{k}", size, "ipo", s.online.beta, self.group,
                  data=s.pairs + "_pairs", pairs=p.path("pairs", "train"), sft=sft,
                  sft_eval=sft_eval, deps=(sft_eval,), seed=k, arm=off,
                  learning_rate=s.offline.learning_rate * lr)
    for size in s.scaling.pm_sizes:
      if size == s.model:
        continue
      pm = p.pm_of(size, self.group)
      for k in p.ablation_seeds():
        if not p.planned(f"{pm_arm(pm)}_s{k}"):
          p.online(f"{pm_arm(pm)}_s{k}", s.model, "ipo", s.online.beta, self.group,
                   judge="proxy", judge_stage=pm, data=f"online_{pm}", seed=k, arm=pm_arm(pm))

  def findings(self, ctx, gate, study):
    return [f for f in (finding_6(ctx, gate, study), finding_8(ctx, gate, study)) if f]

  def section(self, ctx, gate, study):
    policy, proxy = policy_rows(ctx, study), proxy_rows(ctx, study)
    arms = list(dict.fromkeys([r[m] for r in policy + proxy for m in ("online", "offline")]))
    if ctx.boot is None or not arms:
      return Section(self.arms(ctx))
    block = {"policy": axis_numbers(ctx, ctx.workdir, policy, "policy"),
             "proxy": axis_numbers(ctx, ctx.workdir, proxy, "proxy"),
             "trend": {"policy": trend(ctx, policy), "proxy": trend(ctx, proxy)}}
    figures = {}
    if any("online_law" in r for r in block["policy"] + block["proxy"]):
      figures["scaling.png"] = ("plot_scaling", block)
    points = A.law_points(ctx, arms)
    if points:
      figures["laws_h5.png"] = ("plot_laws", points)
    return Section(arms, lines=lines(block), results={"scaling": block}, figures=figures)


EXPERIMENT = H5()
