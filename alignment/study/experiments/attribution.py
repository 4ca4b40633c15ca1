"""The attribution: is it on-policy sampling or the judge's labels that separate
Fig. 1's online and offline IPO?

Fig. 1 compares two things at once: online IPO trains on the policy's own samples
labelled by the proxy PM; offline IPO trains on SFT samples (D_golden) labelled by
the golden judge. Two more arms complete the 2 x 2, each over the ablation seeds:

                     proxy PM's labels              golden judge's labels
  on-policy          online_ipo (Fig. 1)            online_ipo_golden
  SFT samples        offline_ipo_proxy_labels       offline_ipo (Fig. 1)

  proxy_labels               D_golden's train pairs with the proxy PM's verdicts
                             (asked both ways; the PM was trained on these pairs, so
                             its labels agree with the golden judge more often here
                             than on fresh pairs: the summary gives how often)
  online_ipo_golden_s<k>     online IPO judged by the golden judge
  offline_ipo_proxy_labels_s<k>   offline IPO on proxy_labels

Every effect is a difference of envelopes (the best golden win rate reached within
each KL budget, averaged over the two arms' common KL range from 0): on-policy
sampling at each label source, the label source in each mode, and their
interaction; peaks are shown beside them. Holm's correction runs over the five
envelope effects; the sentence reads only effects that survive it.
"""
from __future__ import annotations

import os

import numpy as np

from alignment import stats
from alignment.study import arms as A
from alignment.study import foundation
from alignment.study import stages as stages_lib
from alignment.study.experiment import Experiment, Section
from alignment.study.experiments import fig1

ONLINE_GOLDEN, OFFLINE_PROXY = "online_ipo_golden", "offline_ipo_proxy_labels"


def cells(ctx: A.Context) -> dict | None:
  """The four arms of the 2 x 2 ({(sampling, labels): arm}), None while one is missing."""
  on, off = fig1.online(ctx)[:1], fig1.offline(ctx)[:1]
  if not on or not off or not ctx.has(ONLINE_GOLDEN, OFFLINE_PROXY):
    return None
  return {("on", "proxy"): on[0], ("on", "golden"): ONLINE_GOLDEN,
          ("off", "proxy"): OFFLINE_PROXY, ("off", "golden"): off[0]}


EFFECTS = (  # name, what it is, (a, b) cells of the difference a - b
    ("sampling_at_proxy_labels", "on-policy - SFT samples, both labelled by the proxy",
     (("on", "proxy"), ("off", "proxy"))),
    ("sampling_at_golden_labels", "on-policy - SFT samples, both labelled by the golden judge",
     (("on", "golden"), ("off", "golden"))),
    ("labels_online", "golden - proxy labels, both on-policy", (("on", "golden"), ("on", "proxy"))),
    ("labels_offline", "golden - proxy labels, both on SFT samples",
     (("off", "golden"), ("off", "proxy"))),
)


def effects(ctx: A.Context, c: dict) -> dict:
  """The envelope (headline, Holm-corrected) and peak effects with intervals."""
  cv, gap = ctx.cv, stats.envelope_gap
  env = lambda a, b: gap(cv(c[a]), cv(c[b]))
  fns = {name: (lambda a=a, b=b: env(a, b)) for name, _, (a, b) in EFFECTS}
  fns["interaction"] = lambda: (env(("on", "golden"), ("off", "golden")) -
                                env(("on", "proxy"), ("off", "proxy")))
  fns["fig1_gap"] = lambda: env(("on", "proxy"), ("off", "golden"))
  out = {name: ctx.claim(name, fn) for name, fn in fns.items()}
  family = [n for n in out if n != "fig1_gap"]  # the gap itself is finding 1's
  corrected = A.holm_verdicts([out[n] for n in family])
  for n, v in zip(family, corrected):
    out[n]["holm_verdict"] = v
  out["fig1_gap"]["holm_verdict"] = out["fig1_gap"]["verdict"]
  peaks = {name: ctx.value(lambda a=a, b=b: ctx.peak(c[a]) - ctx.peak(c[b]))
           for name, _, (a, b) in EFFECTS}
  peaks["fig1_gap"] = ctx.value(lambda: ctx.peak(c[("on", "proxy")]) - ctx.peak(c[("off",
                                                                                 "golden")]))
  return {"envelope": {k: _entry(v) for k, v in out.items()}, "peak": peaks}


def _entry(claim: dict) -> dict:
  return {"estimate": A.r(claim["estimate"], 4),
          "interval": [A.r(x, 4) for x in claim["interval"]], "p": A.r(claim.get("p"), 4),
          "min_seeds": claim.get("min_seeds"), "df": A.r(claim.get("df"), 1),
          "foundations": claim.get("foundations", 1), "verdict": claim["holm_verdict"]}


def _direction(a: dict, b: dict) -> str:
  """Where two effects of one kind point, from their corrected verdicts: + (both above
  0, or one above and the other unresolved), - (likewise below), 0 (neither resolved),
  or 'mixed' (one above, one below)."""
  signs = {{"supported": "+", "contradicted": "-"}.get(e["verdict"], "0") for e in (a, b)}
  signs.discard("0")
  return "mixed" if len(signs) > 1 else (signs.pop() if signs else "0")


def sentence(eff: dict, gate: dict) -> str:
  """Which explains Fig. 1's gap: the label source, on-policy sampling, both, or
  (when no effect that points the gap's way survives the correction) that the data
  cannot tell."""
  if not gate.get("gate_passed"):
    return "Inconclusive: the proxy cannot rank the policy's samples (set-up gate)."
  e = eff["envelope"]
  if any(v.get("min_seeds") is not None and v["min_seeds"] < A.MIN_SEEDS for v in e.values()):
    return (f"Not read: an arm of the 2 x 2 has fewer than {A.MIN_SEEDS} seeds (its seed "
            "variance cannot be estimated).")
  gap = {"supported": "+", "contradicted": "-"}.get(e["fig1_gap"]["verdict"], "0")
  sampling = _direction(e["sampling_at_proxy_labels"], e["sampling_at_golden_labels"])
  labels = _direction(e["labels_online"], e["labels_offline"])
  said_s = {"+": "on-policy sampling helps at equal labels",
            "-": "on-policy sampling hurts at equal labels",
            "0": "no effect of on-policy sampling is detected at equal labels",
            "mixed": "on-policy sampling helps with one label source and hurts with the other"}
  said_l = {"+": "the golden judge's labels beat the proxy's",
            "-": "the proxy's labels beat the golden judge's",
            "0": "no effect of the label source is detected",
            "mixed": "the label source helps in one mode and hurts in the other"}
  facts = f"{said_s[sampling]}; {said_l[labels]}"
  if gap == "0":
    return f"Fig. 1 shows no gap between online and offline IPO (envelope); {facts}."
  # Online (proxy labels) minus offline (golden labels) = sampling - labels.
  pushes = [name for name, d, sign in (("on-policy sampling", sampling, "+"),
                                       ("the label source", labels, "-"))
            if d == (sign if gap == "+" else {"+": "-", "-": "+"}[sign])]
  lead = "online" if gap == "+" else "offline"
  if not pushes:
    return (f"Fig. 1's gap ({lead} IPO ahead) is not explained by either effect that the "
            f"data resolve ({facts}): the data cannot tell.")
  return (f"Fig. 1's gap ({lead} IPO ahead) is explained by {' and '.join(pushes)}: "
          f"{facts}.")


class Attribution(Experiment):
  name = "attribution"
  title = "The attribution: on-policy sampling or the judge's labels"
  needs = {"fig1": "completes the 2 x 2 with the Fig. 1 arms"}
  lead = True

  def plan(self, p):
    s = p.s
    p.pair_set("proxy_labels", self.group, lambda d: {"train": p.pair_maker().relabelled(
        p.path("pairs", "train"), p.export("pm"), os.path.join(d, "train"))},
               dict(kind="relabelled", source="pairs/train", by="pm"), deps=("pairs", "pm"))
    for k in s.seeds:
      p.online(f"{ONLINE_GOLDEN}_s{k}", s.model, "ipo", s.online.beta, self.group,
               judge="golden", data="online_golden", seed=k, arm=ONLINE_GOLDEN)
      p.offline(f"{OFFLINE_PROXY}_s{k}", s.model, "ipo", s.online.beta, self.group,
                data="proxy_labelled_pairs", pairs=p.path("proxy_labels", "train"), seed=k,
                arm=OFFLINE_PROXY, deps=("proxy_labels",))

  def section(self, ctx, gate, study):
    c = cells(ctx)
    if c is None:
      return Section(self.arms(ctx))
    eff = effects(ctx, c)
    # Each foundation's proxy relabelled its own D_golden (f<f>/proxy_labels).
    agree = [((stages_lib.stage_summary(ctx.workdir, foundation.prefix(f) + "proxy_labels")
               or {}).get("train") or {}).get("golden_winner_is_label")
             for f in ctx.foundations()]
    agree = [a for a in agree if a is not None]
    eff["proxy_labels_agree_with_golden"] = A.r(np.mean(agree), 4) if agree else None
    if len(agree) > 1:
      eff["proxy_labels_agree_with_golden_by_foundation"] = [A.r(a, 4) for a in agree]
    eff["sentence"] = sentence(eff, gate)
    eff["arms"] = {f"{a}/{b}": arm for (a, b), arm in c.items()}
    arms = [c[k] for k in sorted(c)]
    return Section(arms, lines=lines(eff) + A.rising_lines(ctx, arms),
                   results={"attribution": eff})

  def agreement_arms(self, ctx):
    return [ONLINE_GOLDEN] if ONLINE_GOLDEN in ctx.data else []


def lines(eff: dict) -> list[str]:
  """The report's 2 x 2: the effects with intervals (Holm over the five envelope
  effects), the peaks beside them, and the sentence."""
  e, pk = eff["envelope"], eff["peak"]
  out = ["| effect (envelope from KL 0) | estimate [95% CI] | p | verdict (Holm, 5 effects) "
         "| peak difference [95% CI] |", "|---|---|---|---|---|"]
  names = [(n, what) for n, what, _ in EFFECTS] + [
      ("interaction", "sampling at golden labels - sampling at proxy labels"),
      ("fig1_gap", "Fig. 1: online (proxy labels) - offline (golden labels)")]
  for n, what in names:
    out.append(f"| {what} | {stats.interval_str(e[n])} | {e[n]['p']} | {e[n]['verdict']} | "
               f"{A.fmt(pk[n]) if n in pk else ''} |")
  agree = eff.get("proxy_labels_agree_with_golden")
  each = eff.get("proxy_labels_agree_with_golden_by_foundation")
  out += ["", f"The proxy's labels on D_golden agree with the golden judge's on {agree} of its "
          "train pairs" + (f" (mean over the foundations: {', '.join(map(str, each))})"
                           if each else "") +
          " (the PM was trained on them; on held-out SFT pairs see the gate).",
          "Peaks are maxima of noisy points (biased upwards): the envelope is the headline.",
          "", f"**{eff['sentence']}**", ""]
  return out


EXPERIMENT = Attribution()
