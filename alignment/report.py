"""From a study's stages to results.json, report.md and PNG plots.

Each alignment run becomes a curve: its SFT policy's evaluation (step 0, from
the `sft_eval` stage, measured against the same reference as every later point)
then one point per in-loop evaluation. Runs that differ only in their seed form
an ARM; an arm's curve is the mean over its seeds. Every number a verdict rests
on comes with a 95% interval from one shared bootstrap over seeds, win-rate
prompts and held-out pairs (`alignment.stats`).

The report opens with the SET-UP GATE: the proxy PM's agreement with the golden
judge on held-out pairs of SFT samples (what online training asks it at step 0),
with its Wilson interval, and the SFT policy's mean golden score. Where the
agreement's interval includes 0.5 the proxy cannot rank the policy's samples,
and every finding is reported "inconclusive", whatever its parts say.

Each finding is a list of claims "statistic > 0" (written out in the report);
a finding is reproduced when every claim's interval lies above 0, not
reproduced when one lies below 0, inconclusive otherwise. Claims of "no better"
or "matches" are contrasts against the effect they are set beside, never fixed
margins (see `alignment.stats`).
"""
from __future__ import annotations

import json
import math
import os
import re
import textwrap
from typing import Callable, Optional

import numpy as np

from alignment import faults, files, stats

POINT_KEYS = ("kl", "golden_win_rate", "golden_win_rate_se", "proxy_win_rate",
              "classifier_accuracy", "chosen_logprob_delta", "mean_response_length",
              "proxy_golden_agreement")
EXTRA_KEYS = ("golden_win_rate_hard", "proxy_win_rate_hard", "golden_score",
              "reference_golden_score", "proxy_golden_agreement_vs_reference")
CONTRASTIVE = ("ipo", "dpo", "slic")


# ---------------------------------------------------------------------------
# Runs, points, arms
# ---------------------------------------------------------------------------


def _arrays(path: str) -> Optional[dict]:
  if not os.path.exists(path):
    return None
  from alignment import evaluation  # pylint: disable=g-import-not-at-top
  return evaluation.load_arrays(path)


def sft_point(workdir: str, stage: str) -> Optional[dict]:
  """The SFT policy's own evaluation: the step-0 point of the runs that start from it."""
  path = os.path.join(workdir, stage, "evaluation.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    points = json.load(f)
  return {"step": 0, **{k: v for k, v in points[0].items() if k != "step"}} if points else None


def run_points(workdir: str, stage_name: str, sft: Optional[dict]) -> list[dict]:
  points = [dict(sft)] if sft else []
  for r in files.read_jsonl(os.path.join(workdir, stage_name, "metrics.jsonl")):
    if "eval/kl" in r:
      points.append({"step": r["step"], **{k: r.get(f"eval/{k}") for k in POINT_KEYS + EXTRA_KEYS
                                           if f"eval/{k}" in r}})
  for p in points:
    for k in POINT_KEYS:
      p.setdefault(k, None)
  return points


def collect_runs(workdir: str, stages) -> list[dict]:
  runs = []
  for st in stages:
    if not st.run:
      continue
    sft = sft_point(workdir, st.sft_eval)
    runs.append({"name": st.name, "group": st.group, "arm": st.arm, **st.run,
                 "sft_eval": st.sft_eval, "points": run_points(workdir, st.name, sft)})
  return runs


def run_arrays(workdir: str, run: dict) -> Optional[list[dict]]:
  """The per-item arrays of every point of a run (step 0 from its sft_eval stage)."""
  from alignment import evaluation  # pylint: disable=g-import-not-at-top
  out = []
  for p in run["points"]:
    stage = run["sft_eval"] if p["step"] == 0 else run["name"]
    a = _arrays(evaluation.arrays_path(os.path.join(workdir, stage), p["step"]))
    if a is None:
      return None
    out.append(a)
  return out


def arm_data(workdir: str, runs: list[dict]) -> Optional[stats.ArmData]:
  """Stack an arm's seeds; None when a run is missing points or arrays."""
  per_run = [run_arrays(workdir, r) for r in runs]
  if any(a is None or not a for a in per_run):
    return None
  steps = [tuple(p["step"] for p in r["points"]) for r in runs]
  if len(set(steps)) != 1:
    return None
  stack = lambda key: (np.stack([np.stack([p[key] for p in a]) for a in per_run])
                       if all(key in p for a in per_run for p in a) else None)
  kl = np.array([[float(np.mean(p["kl"])) for p in a] for a in per_run])
  return stats.ArmData(steps=np.array(steps[0]), kl=kl, win=stack("golden_win"),
                       classifier=stack("classifier"), chosen=stack("chosen_delta"),
                       agreement=stack("agreement"))


def training_stats(workdir: str, name: str, keys=("loss", "margin", "policy_chosen_logps",
                                                  "policy_rejected_logps")) -> dict:
  rows = [r for r in files.read_jsonl(os.path.join(workdir, name, "metrics.jsonl")) if "loss" in r]
  return {k: np.array([r[k] for r in rows]) for k in keys if rows and k in rows[0]}


def _r(x, nd=3):
  return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), nd)


# ---------------------------------------------------------------------------
# The set-up gate
# ---------------------------------------------------------------------------


def setup_gate(workdir: str, stages, runs: list[dict]) -> dict:
  """Can the proxy rank the SFT policy's samples? The figures that say so, first.

  proxy_agreement: the proxy PM's debiased verdict against the golden label on the
  held-out pairs of SFT samples (pairs/held_out: validation prompts, golden ties
  dropped), with a Wilson 95% interval; the gate passes when the interval lies
  above 0.5. sft_golden_score: the SFT policy's mean golden score on the win
  prompts, with its standard error. sft_self_agreement: the same agreement on
  two SFT samples per win prompt (the evaluation's step-0 point).
  """
  out: dict = {}
  by = {st.name: st for st in stages}
  pm = [r for r in files.read_jsonl(os.path.join(workdir, "pm", "metrics.jsonl"))
        if "eval/accuracy" in r]
  if pm:
    acc, n = pm[-1]["eval/accuracy"], int(pm[-1].get("eval/pairs", 0))
    lo, hi = stats.wilson(acc * n, n) if n else (float("nan"), float("nan"))
    out.update(proxy_agreement=_r(acc, 4), proxy_agreement_interval=[_r(lo, 4), _r(hi, 4)],
               proxy_agreement_pairs=n, proxy_position_bias=_r(pm[-1].get("eval/position_bias")))
  rm_path = os.path.join(workdir, "rm", "metrics.jsonl")
  rm = [r for r in files.read_jsonl(rm_path) if "eval/accuracy" in r] if os.path.exists(
      rm_path) else []
  if rm:  # the scalar reward model of the rl experiment, on the same held-out pairs
    acc, n = rm[-1]["eval/accuracy"], int(rm[-1].get("eval/pairs", 0))
    lo, hi = stats.wilson(acc * n, n) if n else (float("nan"), float("nan"))
    out.update(rm_agreement=_r(acc, 4), rm_agreement_interval=[_r(lo, 4), _r(hi, 4)],
               rm_agreement_pairs=n)
  sft = _arrays(os.path.join(workdir, "sft_eval", "eval", "step_000000.npz"))
  if sft is not None:
    m, se = stats.mean_se(sft["golden_score"])
    out.update(sft_golden_score=_r(m), sft_golden_score_se=_r(se),
               sft_golden_score_interval=[_r(m - stats.Z95 * se), _r(m + stats.Z95 * se)],
               sft_mean_length=_r(float(np.mean(sft["length"]))))
    if "agreement" in sft:
      decided = sft["agreement"][~np.isnan(sft["agreement"])]
      lo, hi = stats.wilson(float(decided.sum()), decided.size)
      out.update(sft_self_agreement=_r(float(decided.mean()) if decided.size else None, 4),
                 sft_self_agreement_interval=[_r(lo, 4), _r(hi, 4)],
                 sft_self_agreement_pairs=int(decided.size))
  pairs = _stage_summary(workdir, "pairs")
  if pairs:
    out["d_golden"] = {k: pairs.get(k) for k in ("train", "held_out")}
  if "pairs" in by and by["pairs"].params:
    out["d_golden_kind"] = by["pairs"].params.get("kind")
  lo = (out.get("proxy_agreement_interval") or [None])[0]
  out["gate_passed"] = bool(lo is not None and lo > 0.5)
  for r in runs:
    if r["mode"] == "online" and len(r["points"]) > 1:
      out.setdefault("online_final_agreement", {})[r["name"]] = _r(
          r["points"][-1].get("proxy_golden_agreement"))
  return out


def _stage_summary(workdir: str, name: str) -> Optional[dict]:
  path = os.path.join(workdir, name, "STAGE.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f).get("summary")


# ---------------------------------------------------------------------------
# Findings: claims on the arms' curves
# ---------------------------------------------------------------------------


class Context:
  """The arms of a study and their shared bootstrap.

  runs: the runs' metadata (name, arm, mode, group, algorithm, data, points);
  data: {arm: stats.ArmData}; source: the online run H1 replays and H2 samples.
  `Context.from_workdir` reads both from a study's stages; tests build them directly.
  """

  def __init__(self, runs: list[dict], data: dict, resamples: int, seed: int = 0,
               source: Optional[str] = None, workdir: str = ""):
    self.workdir, self.runs, self.source, self.data = workdir, runs, source, data
    self.arm_runs: dict[str, list[dict]] = {}
    for r in runs:
      self.arm_runs.setdefault(r["arm"], []).append(r)
    self.boot = stats.Bootstrap(data, resamples=resamples, seed=seed) if data else None

  @classmethod
  def from_workdir(cls, workdir: str, runs: list[dict], resamples: int, seed: int = 0,
                   source: Optional[str] = None) -> "Context":
    arm_runs: dict[str, list[dict]] = {}
    for r in runs:
      arm_runs.setdefault(r["arm"], []).append(r)
    data = {}
    for name, rs in arm_runs.items():
      d = arm_data(workdir, rs)
      if d is not None:
        data[name] = d
    for r in runs:  # a run of a several-seed arm is also an arm of its own (H1, H2)
      if len(arm_runs[r["arm"]]) > 1:
        d = arm_data(workdir, [r])
        if d is not None:
          data["run:" + r["name"]] = d
    return cls(runs, data, resamples, seed, source, workdir)

  def has(self, *arms) -> bool:
    return self.boot is not None and all(a in self.data for a in arms)

  def cv(self, arm):
    return self.boot.curves(arm)

  def peak(self, arm):
    return stats.peak(self.cv(arm).win)

  def start(self, arm):
    return self.cv(arm).win[:, 0]

  def final(self, arm):
    return self.cv(arm).win[:, -1]

  def claim(self, text: str, fn: Callable[[], np.ndarray], counts: bool = True) -> dict:
    c = self.boot.claim(lambda _: fn())
    return {"claim": text, **c, "counts": counts}

  def value(self, fn) -> dict:
    """Estimate and interval of a quantity (no claim)."""
    c = self.boot.claim(lambda _: fn())
    return {"estimate": _r(c["estimate"], 4), "interval": [_r(x, 4) for x in c["interval"]]}

  def arm_of(self, mode: str, group: str = "fig1", algorithm: str = "ipo") -> list[str]:
    return sorted({r["arm"] for r in self.runs if r["group"] == group and r["mode"] == mode
                   and r["algorithm"] == algorithm and r["arm"] in self.data})


def arm_order(names) -> list[str]:
  """Arm names sorted with their numbers as numbers (stale4 before stale16)."""
  return sorted(names, key=lambda name: [(0, int(t), "") if t.isdigit() else (1, 0, t)
                                         for t in re.split(r"(\d+)", name) if t])


def _finding(fid: int, text: str, parts: list[dict], numbers: dict, gate: dict,
             rule: str) -> dict:
  counted = [p for p in parts if p.get("counts", True)]
  verdict = stats.combine([p["verdict"] for p in counted])
  reason = None
  if not gate.get("gate_passed"):
    reason = "inconclusive: the proxy cannot rank the policy's samples (set-up gate)"
    verdict = "inconclusive"
  main = counted[0] if counted else {}
  return {"id": fid, "finding": text, "verdict": verdict, "reason": reason,
          "estimate": _r(main.get("estimate"), 4),
          "interval": [_r(x, 4) for x in main.get("interval", [None, None])],
          "parts": [{**p, "estimate": _r(p.get("estimate"), 4),
                     "interval": [_r(x, 4) for x in p.get("interval", [None, None])]}
                    for p in parts],
          "numbers": numbers, "rule": rule}


def _pooled_peak(ctx, arms):
  return np.max(np.stack([ctx.peak(a) for a in arms]), axis=0)


def _rise_and_fall(ctx, arm):
  return np.minimum(ctx.peak(arm) - ctx.start(arm), ctx.peak(arm) - ctx.final(arm))


def finding_1(ctx: Context, gate: dict):
  on, off = ctx.arm_of("online"), ctx.arm_of("offline")
  if not on or not off:
    return None
  parts = [
      ctx.claim("online peak - offline peak > 0 (each mode pooled over the same betas)",
                lambda: _pooled_peak(ctx, on) - _pooled_peak(ctx, off)),
      ctx.claim("online envelope - offline envelope > 0, averaged over KL in [0, K] (K: the "
                "smaller of the two curves' largest KL; the SFT point starts both)",
                lambda: stats.envelope_gap([ctx.cv(a) for a in on], [ctx.cv(a) for a in off])),
      ctx.claim(f"online over-optimises ({on[0]}): min(peak - start, peak - final) > 0",
                lambda: _rise_and_fall(ctx, on[0])),
      ctx.claim(f"offline over-optimises ({off[0]}): min(peak - start, peak - final) > 0",
                lambda: _rise_and_fall(ctx, off[0])),
  ]
  numbers = {a: _arm_numbers(ctx, a) for a in on + off}
  return _finding(1, "Both over-optimise; online is better at equal KL and has the higher peak",
                  parts, numbers, gate, "every claim's 95% interval above 0")


def finding_2(ctx: Context, gate: dict, workdir: str):
  if ctx.source is None or not ctx.has("replay_shuffled"):
    return None
  src_name = ctx.source
  src = _source_arm(ctx)
  off = ctx.arm_of("offline")
  if not ctx.has(src) or not off:
    return None
  off = off[0]
  a, b = training_stats(workdir, src_name), training_stats(workdir, "replay_ordered")
  n = min(len(a.get("loss", [])), len(b.get("loss", [])))
  rel = max(float(np.max(np.abs(a[k][:n] - b[k][:n]) / np.maximum(np.abs(a[k][:n]), 1e-6)))
            for k in a) if n else float("nan")
  shift = float(np.max(np.abs(a["loss"][1:n] - b["loss"][:n - 1]) /
                       np.maximum(np.abs(a["loss"][1:n]), 1e-6))) if n > 1 else float("nan")
  parts = [
      ctx.claim(f"{src_name} peak - shuffled replay peak > 0 (the online order's coverage "
                "is lost when shuffled)", lambda: ctx.peak(src) - ctx.peak("replay_shuffled")),
      ctx.claim("online + offline - 2 x shuffled > 0 (the shuffled replay gains less than half "
                "of online's gain over offline)",
                lambda: ctx.peak(src) + ctx.peak(off) - 2 * ctx.peak("replay_shuffled")),
  ]
  windows = sorted((int(a_[len("replay_window"):]), a_) for a_ in ctx.data
                   if a_.startswith("replay_window"))
  numbers = {"tandem_check": {"max_relative_difference_ordered_replay": _r(rel, 8),
                              "max_relative_difference_shifted_one_batch": _r(shift, 4),
                              "passes": bool(rel < 1e-3 and shift > 1e-3)},
             "online_peak": ctx.value(lambda: ctx.peak(src)),
             "offline_peak": ctx.value(lambda: ctx.peak(off)),
             "shuffled_peak": ctx.value(lambda: ctx.peak("replay_shuffled")),
             "window_peaks": {str(k): ctx.value(lambda a_=a_: ctx.peak(a_)) for k, a_ in windows}}
  return _finding(2, "Coverage (H1): shuffled D_online gains little over offline; the online "
                  "order matters (ordered replay = online is a determinism check)", parts,
                  numbers, gate, "both claims' intervals above 0; the tandem check (ordered "
                  "replay's training statistics within 0.1% of the online run's, a one-batch "
                  "shift breaking it) is reported, not voted")


def _arm_name(ctx, run_name: str) -> str:
  return next(r["arm"] for r in ctx.runs if r["name"] == run_name)


def _source_arm(ctx) -> str:
  """The source run as an arm of its own (its arm has other seeds), else its arm."""
  return "run:" + ctx.source if "run:" + ctx.source in ctx.data else _arm_name(ctx, ctx.source)


def source_run(stages) -> Optional[str]:
  """The online run the H1 replays and H2 pair sets depend on."""
  by = {st.name: st for st in stages}
  for name in ("replay_ordered", "peak_pairs", "final_pairs"):
    if name in by:
      return next((d for d in by[name].deps if by[d].kind == "online"), None)
  return None


def finding_3(ctx: Context, gate: dict):
  if ctx.source is None or not ctx.has("offline_peak_pairs"):
    return None
  src = _source_arm(ctx)
  gain = lambda a: ctx.peak(a) - ctx.start(a)
  parts = [ctx.claim("online gain - 2 x gain of offline on the online PEAK policy's pairs > 0 "
                     "(gains over SFT: it barely beats SFT)",
                     lambda: gain(src) - 2 * gain("offline_peak_pairs"))]
  if ctx.has("offline_final_pairs"):
    parts.append(ctx.claim("the same with the online FINAL policy's pairs (second row)",
                           lambda: gain(src) - 2 * gain("offline_final_pairs"), counts=False))
  numbers = {"online_gain": ctx.value(lambda: gain(src)),
             "peak_pairs_gain": ctx.value(lambda: gain("offline_peak_pairs"))}
  if ctx.has("offline_final_pairs"):
    numbers["final_pairs_gain"] = ctx.value(lambda: gain("offline_final_pairs"))
  policy_step = (_stage_summary(ctx.workdir, "peak_pairs") or {}).get("policy_step")
  numbers["peak_policy_step"] = policy_step
  return _finding(3, "Quality (H2): offline training on pairs from the online policy, "
                  "relabelled by the golden judge, barely beats SFT", parts, numbers, gate,
                  "the peak-policy row's interval above 0 (the final-policy row is shown)")


def finding_4(ctx: Context, gate: dict):
  on, off = ctx.arm_of("online"), ctx.arm_of("offline")
  if not on or not off or ctx.cv(on[0]).classifier is None:
    return None
  on, off = on[0], off[0]
  contrastive = sorted({r["arm"] for r in ctx.runs if r["algorithm"] in CONTRASTIVE
                        and r["arm"] in ctx.data})
  parts = [
      ctx.claim("offline final classifier accuracy - online's > 0",
                lambda: ctx.cv(off).classifier[:, -1] - ctx.cv(on).classifier[:, -1]),
      ctx.claim("online peak win rate - offline's > 0",
                lambda: ctx.peak(on) - ctx.peak(off)),
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
             "offline_accuracy_win_rate_correlation": _r(corr),
             "final_chosen_delta": {a: ctx.value(lambda a=a: ctx.cv(a).chosen[:, -1])
                                    for a in contrastive}}
  return _finding(4, "Classification vs generation (H3): offline policies classify better, "
                  "online ones generate better; chosen log-probs fall below SFT (contrastive "
                  "runs), most steeply offline", parts, numbers, gate,
                  "every claim's interval above 0; Best-of-2 is left out of the chosen "
                  "log-prob claim (maximum likelihood on the winners raises them by design)")


def finding_5(ctx: Context, gate: dict):
  if not ctx.has("online_best_of_2", "offline_best_of_2"):
    return None
  on, off = "online_best_of_2", "offline_best_of_2"
  parts = [ctx.claim("online Best-of-2 peak - offline Best-of-2 peak > 0",
                     lambda: ctx.peak(on) - ctx.peak(off))]
  if ctx.has("offline_best_of_2_replay"):
    rep = "offline_best_of_2_replay"
    parts.append(ctx.claim("2 x replay - online - offline > 0 (offline Best-of-2 on shuffled "
                           "D_online is closer to online than to offline)",
                           lambda: 2 * ctx.peak(rep) - ctx.peak(on) - ctx.peak(off)))
  numbers = {a: _arm_numbers(ctx, a) for a in (on, off, "offline_best_of_2_replay")
             if a in ctx.data}
  return _finding(5, "Non-contrastive loss (H4): the gap persists for Best-of-2; offline "
                  "Best-of-2 on shuffled D_online matches online", parts, numbers, gate,
                  "every claim's interval above 0")


def finding_6(ctx: Context, gate: dict, sizes: list[str], main_model: str):
  rows = []
  for size in sizes:
    if size == main_model:
      on, off = (ctx.arm_of("online") or [None])[0], (ctx.arm_of("offline") or [None])[0]
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
                           lambda a=on, b=off: ctx.peak(a) - ctx.peak(b)))
  numbers = {size: {"online": ctx.value(lambda a=on: ctx.peak(a)),
                    "offline": ctx.value(lambda a=off: ctx.peak(a))} for size, on, off in rows}
  return _finding(6, "Scaling (H5): peak win rate grows with policy size; the online/offline "
                  "gap persists", parts, numbers, gate,
                  "every claim's interval above 0; every size is measured against the same "
                  "reference policy (the main SFT) and trained against the same proxy PM on "
                  "the same D_golden; KL is against each size's own SFT")


def finding_7(ctx: Context, gate: dict, pairs_kind: str):
  # The study trains its Fig. 1 offline arm on D_golden; a kind that IS D_golden is that arm.
  arm = lambda kind: ((ctx.arm_of("offline") or [None])[0] if kind == pairs_kind
                      else f"offline_{kind}_pairs")
  base, gap, mixed = arm("writer"), "offline_gap_pairs", arm("mixed")
  if not ctx.has(gap) or base not in ctx.data or mixed not in ctx.data:
    return None
  parts = [
      ctx.claim("mixed + writer - 2 x wide-gap > 0 (a wider quality gap gains less than half "
                "of what one SFT response gains)",
                lambda: ctx.peak(mixed) + ctx.peak(base) - 2 * ctx.peak(gap)),
      ctx.claim("one response from SFT - writer pairs > 0", lambda: ctx.peak(mixed) -
                ctx.peak(base)),
      ctx.claim("one response from SFT - wide-gap pairs > 0", lambda: ctx.peak(mixed) -
                ctx.peak(gap)),
  ]
  arms = list(dict.fromkeys([base, gap, mixed] + ctx.arm_of("offline")[:1]))
  numbers = {a: _arm_numbers(ctx, a) for a in arms}
  return _finding(7, "Data sets (section 6): a wider quality gap does not help; making one "
                  "response on-policy (sampled from SFT) helps most", parts, numbers, gate,
                  "every claim's interval above 0 (base: offline on the writer's pairs; the "
                  "fully on-policy D_golden is shown beside them)")


def pair_set_ablation(ctx: Context, pairs_kind: str) -> dict:
  """Offline on D_golden against offline on each other pair set: peak differences."""
  if ctx.boot is None or not ctx.arm_of("offline"):
    return {}
  base = ctx.arm_of("offline")[0]
  out = {}
  for kind in ("writer", "mixed", "gap"):
    arm = f"offline_{kind}_pairs"
    if kind != pairs_kind and arm in ctx.data:
      out[f"{pairs_kind}_minus_{kind}_offline_peak"] = ctx.value(
          lambda a=arm: ctx.peak(base) - ctx.peak(a))
  return out


def _arm_numbers(ctx, arm) -> dict:
  cv = ctx.cv(arm)
  j = int(stats.peak_index(cv.win)[0])
  return {"peak": ctx.value(lambda: ctx.peak(arm)), "kl_at_peak": _r(cv.kl[0, j]),
          "peak_step": int(cv.steps[j]), "final": _r(cv.win[0, -1]),
          "final_kl": _r(cv.kl[0, -1]), "seeds": ctx.data[arm].seeds}


def findings(ctx: Context, gate: dict, study) -> list[dict]:
  out = [finding_1(ctx, gate), finding_2(ctx, gate, ctx.workdir), finding_3(ctx, gate),
         finding_4(ctx, gate), finding_5(ctx, gate),
         finding_6(ctx, gate, list(study.sizes), study.model),
         finding_7(ctx, gate, study.pairs)]
  return [f for f in out if f is not None]


# ---------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------


def _plt():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _se(rep_rj: np.ndarray) -> np.ndarray:
  """Bootstrap standard error per point (std over the resamples)."""
  return np.nanstd(rep_rj[1:], axis=0) if rep_rj.shape[0] > 2 else np.zeros(rep_rj.shape[1])


def _online(ctx: Context, arm: str) -> bool:
  runs = ([r for r in ctx.runs if r["name"] == arm[len("run:"):]] if arm.startswith("run:")
          else ctx.arm_runs.get(arm, []))
  return any(r["mode"] == "online" for r in runs)


def _save(fig, ax, path: str, title: str, xlabel: str, ylabel: str, log_x: bool = True,
          hline: float | None = 0.5, vline: float | None = None):
  plt = _plt()
  if log_x:
    ax.set_xscale("log")
  if hline is not None:
    ax.axhline(hline, color="grey", lw=0.5)
  if vline is not None:
    ax.axvline(vline, color="grey", lw=0.5)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(textwrap.fill(title, 72), fontsize=10)  # long titles wrap, never cut
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _curves_plot(ctx: Context, arms: list[str], path: str, field: str, x: str, title: str,
                 xlabel: str, ylabel: str, mark_peak: bool = False, hline: float = 0.5):
  """One line per arm: its mean curve of `field` against KL or step, +- 1 s.e."""
  fig, ax = _plt().subplots(figsize=(7, 4.5))
  for arm in arms:
    cv = ctx.cv(arm)
    y = getattr(cv, field)
    if y is None:
      continue
    xs = np.maximum(cv.kl[0], 1e-3) if x == "kl" else cv.steps
    seeds = ctx.data[arm].seeds
    label = arm + (f" ({seeds} seeds)" if seeds > 1 else "")
    line = ax.errorbar(xs, y[0], yerr=_se(y), fmt="-o" if _online(ctx, arm) else "--o", ms=3,
                       capsize=2, label=label)
    if mark_peak:
      j = int(stats.peak_index(y)[0])
      ax.plot([xs[j]], [y[0, j]], "*", ms=12, color=line[0].get_color())
  _save(fig, ax, path, title, xlabel, ylabel, log_x=(x == "kl"), hline=hline)


def plot_budget(ctx: Context, arms: list[str], path: str, title: str):
  _curves_plot(ctx, arms, path, "win", "kl", title + "  (* = peak of the mean curve)",
               "KL(pi || pi_sft)  (exact, per response; log scale; SFT point at 1e-3)",
               "golden win rate vs reference (+- 1 s.e.)", mark_peak=True)


def plot_agreement(ctx: Context, arms: list[str], path: str):
  """The proxy's agreement with the golden judge on each policy's own samples."""
  _curves_plot(ctx, arms, path, "agreement", "kl",
               "The proxy where the policy samples (paper Figs. 6-7)",
               "KL(pi || pi_sft)  (log scale)",
               "proxy-golden agreement on pi's samples (+- 1 s.e.)")


def plot_chosen_logprob(ctx: Context, arms: list[str], path: str):
  _curves_plot(ctx, arms, path, "chosen", "step",
               "H3: chosen log-prob against SFT over training", "step",
               "log pi(y_w) - log pi_sft(y_w)  (+- 1 s.e.)", hline=0.0)


def plot_classifier(runs: list[dict], path: str):
  fig, ax = _plt().subplots(figsize=(6, 4.5))
  for mode, marker in (("online", "o"), ("offline", "x")):
    pts = [p for r in runs if r["mode"] == mode for p in r["points"] if p["step"] > 0
           and p.get("classifier_accuracy") is not None]
    ax.scatter([p["classifier_accuracy"] for p in pts], [p["golden_win_rate"] for p in pts],
               marker=marker, label=mode, alpha=0.7)
  _save(fig, ax, path, "H3: classification vs generation",
        "policy-as-classifier accuracy on held-out D_golden pairs", "golden win rate",
        log_x=False, hline=None, vline=0.5)


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------

GROUP_TITLES = {"fig1": "Fig. 1: online vs offline IPO", "losses": "Other losses",
                "h1": "H1 coverage: D_online replayed", "h2": "H2 quality",
                "h4": "H4 Best-of-2", "h5": "H5 policy size",
                "sec6": "Pair sets: the writer ablation and section 6",
                "rl": "Beyond the paper: RLOO and GRPO beside online and offline IPO",
                "staleness": "Beyond the paper: staleness, from online to offline"}


def comparisons(ctx: Context, group: str) -> dict:
  """Each arm of `group` against Fig. 1's online IPO (seed-pooled): the peak
  difference and the envelope gap from KL 0, with intervals (positive: the arm
  does better than online IPO)."""
  online = ctx.arm_of("online")[:1]
  if ctx.boot is None or not online:
    return {}
  out = {}
  for arm in arm_order({r["arm"] for r in ctx.runs if r["group"] == group and r["arm"] in ctx.data}):
    out[arm] = {
        "peak_minus_online_ipo": ctx.value(lambda a=arm: ctx.peak(a) - ctx.peak(online[0])),
        "envelope_minus_online_ipo": ctx.value(lambda a=arm: stats.envelope_gap(
            [ctx.cv(a)], [ctx.cv(online[0])])),
        **_arm_numbers(ctx, arm)}
    out[arm]["reading"] = {k: side(out[arm][f"{k}_minus_online_ipo"])
                           for k in ("peak", "envelope")}
  return out


def side(value) -> str:
  """Where an arm stands against online IPO on one difference, from its interval:
  'above' (the interval lies above 0), 'below', or 'no difference detected'."""
  if not isinstance(value, dict) or value.get("estimate") is None:
    return "n/a"
  return {"supported": "above", "contradicted": "below"}.get(
      stats.verdict(*value["interval"]), "no difference detected")


def comparison_reading(group: str, compared: dict, gate: dict, offline_gap=None) -> str:
  """One sentence on what an experiment's comparisons with online IPO show: which
  arms are above, below or indistinguishable from it (peak, and envelope from KL 0),
  read from the intervals only. A failed set-up gate makes it inconclusive, as the
  findings. offline_gap: offline IPO's peak minus online IPO's (the staleness
  experiment's k = infinity end)."""
  if not gate.get("gate_passed"):
    return ("What it shows: inconclusive: the proxy cannot rank the policy's samples "
            "(set-up gate).")
  parts = []
  for what in ("peak", "envelope"):
    by = {}
    for arm, c in compared.items():
      by.setdefault(c["reading"][what], []).append(arm)
    said = [f"{k}{'' if k in ('above', 'below') else ' for'} {', '.join(by[k])}"
            for k in ("above", "below", "no difference detected", "n/a") if k in by]
    parts.append(f"{'peak' if what == 'peak' else 'envelope from KL 0'}: " + "; ".join(said))
  text = ("What it shows, against online IPO (from the 95% intervals): " + ". ".join(parts)
          + ".")
  if group == "staleness" and offline_gap is not None and offline_gap.get("estimate") is not None:
    text += (f" Offline IPO on the SFT pairs (the k = infinity end) - online IPO: peak "
             f"{stats.interval_str(offline_gap)} ({side(offline_gap)}).")
  return text


def _fmt(v) -> str:
  if isinstance(v, dict) and "estimate" in v:
    if v["estimate"] is None:
      return "n/a"
    lo, hi = v["interval"]
    return f"{v['estimate']:.3f} [{lo:.3f}, {hi:.3f}]"
  return "n/a" if v is None else f"{v}"


def _arm_table(ctx: Context, arms: list[str]) -> list[str]:
  lines = ["| arm | mode | data | seeds | peak win rate [95% CI] | step / KL at peak | final win "
           "rate | final KL | final classifier acc. | final chosen log-prob delta | final "
           "length | final agreement |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for arm in arms:
    runs = ctx.arm_runs[arm]
    cv = ctx.cv(arm)
    n = _arm_numbers(ctx, arm)
    last = lambda k: _r(np.mean([r["points"][-1].get(k) for r in runs
                                 if r["points"][-1].get(k) is not None]) if any(
                                     r["points"][-1].get(k) is not None for r in runs) else None)
    lines.append(f"| {arm} | {runs[0]['mode']} | {runs[0]['data']} | {len(runs)} | "
                 f"{_fmt(n['peak'])} | {n['peak_step']} / {n['kl_at_peak']} | "
                 f"{_r(cv.win[0, -1])} | {_r(cv.kl[0, -1])} | {last('classifier_accuracy')} | "
                 f"{last('chosen_logprob_delta')} | {last('mean_response_length')} | "
                 f"{last('proxy_golden_agreement')} |")
  return lines


def _gate_lines(gate: dict) -> list[str]:
  ci = lambda k: gate.get(k + "_interval") or [None, None]
  lines = ["## Set-up gate", "",
           "Can the proxy rank the SFT policy's own samples? Agreement: the proxy PM's "
           "verdict against the golden judge on held-out pairs of two SFT samples per "
           "validation prompt (golden ties dropped), Wilson 95% interval. Where the interval "
           "includes 0.5, every finding below is inconclusive.", "",
           "| quantity | value | 95% interval |", "|---|---|---|",
           f"| proxy agreement on held-out SFT pairs (n={gate.get('proxy_agreement_pairs')}) | "
           f"{gate.get('proxy_agreement')} | {ci('proxy_agreement')} |",
           f"| SFT policy's mean golden score (s.e. {gate.get('sft_golden_score_se')}) | "
           f"{gate.get('sft_golden_score')} | {ci('sft_golden_score')} |",
           f"| proxy agreement on two SFT samples per win prompt "
           f"(n={gate.get('sft_self_agreement_pairs')}) | {gate.get('sft_self_agreement')} | "
           f"{ci('sft_self_agreement')} |", "",
           f"**Gate: {'passed' if gate.get('gate_passed') else 'FAILED'}** (D_golden: "
           f"{gate.get('d_golden_kind')} pairs)."]
  return lines


def write(study, workdir: str, stages, golden_judge: dict | None = None) -> dict:
  """results.json, the plots and report.md, replaced together (files.staged): a
  failed write (a full disk) leaves the previous report whole. golden_judge: what
  the study's golden judge was (results.json; default the environment's program)."""
  with files.staged(workdir) as out:
    return _write(study, workdir, stages, out, golden_judge)


def _write(study, workdir: str, stages, out: str, golden_judge: dict | None = None) -> dict:
  """Reads the study in `workdir`, writes the report's files into `out`."""
  runs = collect_runs(workdir, stages)
  gate = setup_gate(workdir, stages, runs)
  ctx = Context.from_workdir(workdir, runs, int(study.bootstrap), seed=int(study.seed),
                             source=source_run(stages))
  found = findings(ctx, gate, study) if ctx.boot is not None else []
  arms_out = {a: _arm_numbers(ctx, a) for a in sorted(ctx.arm_runs) if a in ctx.data}
  ablations = pair_set_ablation(ctx, study.pairs)
  compared = {g: c for g in ("rl", "staleness") if (c := comparisons(ctx, g))}
  fig1_online, fig1_offline = ctx.arm_of("online")[:1], ctx.arm_of("offline")[:1]
  offline_gap = (ctx.value(lambda: ctx.peak(fig1_offline[0]) - ctx.peak(fig1_online[0]))
                 if "staleness" in compared and fig1_online and fig1_offline else None)
  readings = {g: comparison_reading(g, c, gate, offline_gap) for g, c in compared.items()}
  results = {"study": study.scale, "setup": gate, "findings": found,
             "golden_judge": golden_judge or {"kind": "program"}, "ablations": ablations,
             "comparisons": compared, "comparison_readings": readings, "arms": arms_out,
             "runs": [{k: v for k, v in r.items() if k not in ("group", "sft_eval")}
                      for r in runs]}
  # Keys in reading order: the gate before the findings, the findings before the runs.
  files.write_json(os.path.join(out, "results.json"), results, sort_keys=False)
  faults.hit("report", "", path=os.path.join(workdir, "results.json"))
  plots = []
  groups = [g for g in GROUP_TITLES if any(r["group"] == g for r in runs)]
  arms_in = lambda g: arm_order({r["arm"] for r in runs if r["group"] == g and r["arm"] in ctx.data})
  for g in groups:
    arms = arms_in(g)
    if g in ("h1", "h2") and ctx.source:  # beside the online run they are about, and offline
      arms = [_source_arm(ctx)] + ctx.arm_of("offline")[:1] + arms
    if g == "sec6":  # beside offline on D_golden
      arms = list(dict.fromkeys(ctx.arm_of("offline")[:1] + arms))
    if g in ("rl", "staleness"):  # beside Fig. 1's online and offline IPO
      arms = list(dict.fromkeys(ctx.arm_of("online")[:1] + arms + ctx.arm_of("offline")[:1]))
    if not arms:
      continue
    name = f"budget_{g}.png"
    plot_budget(ctx, arms, os.path.join(out, name), GROUP_TITLES[g])
    plots.append(name)
  if ctx.data:
    plot_agreement(ctx, fig1_online + fig1_offline + [
        a for a in ("online_best_of_2",) if a in ctx.data], os.path.join(out, "agreement.png"))
    plot_classifier(runs, os.path.join(out, "classifier_vs_winrate.png"))
    plot_chosen_logprob(ctx, [a for a in sorted(ctx.arm_runs) if a in ctx.data
                              and not a.startswith("replay_window")],
                        os.path.join(out, "chosen_logprob.png"))
    plots += ["agreement.png", "classifier_vs_winrate.png", "chosen_logprob.png"]
  stage_info = []
  for st in stages:
    path = os.path.join(workdir, st.name, "STAGE.json")
    if os.path.exists(path):
      with open(path) as f:
        stage_info.append(json.load(f))
  md = [f"# Study report ({study.scale})", ""] + _gate_lines(gate) + [
      "", "## Findings", "",
      "Golden win rate: mean golden probability P(policy beats reference) over the eval "
      "prompts; the reference is " + ("the golden policy" if study.golden_policy else
                                      "the SFT policy") + "; KL: exact, against SFT. An arm's "
      "curve is the mean over its seeds; a peak is the highest point of that mean curve. "
      f"Intervals: 95%, percentile bootstrap ({study.bootstrap} resamples of seeds within "
      "arms, win-rate prompts and held-out pairs, shared by every claim). A finding is "
      "reproduced when every counted claim's interval lies above 0, not reproduced when one "
      "lies below 0, inconclusive otherwise (or when the gate fails).", "",
      "| # | finding | verdict | claims: estimate [95% CI] -> supported / contradicted / "
      "unclear |", "|---|---|---|---|"]
  for f in found:
    claims = "<br>".join(
        f"{'' if p['counts'] else '(shown, not voted) '}{p['claim']}: "
        f"{stats.interval_str(p)} -> {p['verdict']}" for p in f["parts"])
    md.append(f"| {f['id']} | {f['finding']} | **{f['verdict']}**"
              f"{' (' + f['reason'] + ')' if f['reason'] else ''} | {claims} |")
  md += ["", "Numbers behind each finding (results.json has them all):", ""]
  for f in found:
    md.append(f"- {f['id']}: `{json.dumps(f['numbers'])}`")
  for g in groups:
    arms = arms_in(g)
    if not arms:
      continue
    md += ["", f"## {GROUP_TITLES[g]}", "", f"![{g}](budget_{g}.png)", ""]
    if g == "sec6":
      arms = list(dict.fromkeys(ctx.arm_of("offline")[:1] + arms))
      md += [f"- {k.replace('_', ' ')}: {_fmt(v)}" for k, v in ablations.items()] + [""]
    if g in compared:
      if g == "rl" and gate.get("rm_agreement") is not None:
        md += [f"- reward model's agreement on held-out SFT pairs (n="
               f"{gate['rm_agreement_pairs']}): {gate['rm_agreement']} "
               f"{gate['rm_agreement_interval']} (the proxy PM's: "
               f"{gate.get('proxy_agreement')} {gate.get('proxy_agreement_interval')})"]
      md += [f"- {arm} - online IPO: peak {_fmt(c['peak_minus_online_ipo'])}, envelope from "
             f"KL 0 {_fmt(c['envelope_minus_online_ipo'])}" for arm, c in compared[g].items()]
      md += ["", readings[g], ""]
      arms = list(dict.fromkeys(ctx.arm_of("online")[:1] + arms + ctx.arm_of("offline")[:1]))
    md += _arm_table(ctx, arms)
  if ctx.data:
    md += ["", "## The proxy on the policy's samples", "", "![agreement](agreement.png)", "",
           "## H3: classification vs generation", "",
           "![classifier](classifier_vs_winrate.png)", "", "![chosen log-prob](chosen_logprob.png)"]
  md += ["", "## Stages", "", "| stage | kind | seconds |", "|---|---|---|"]
  md += [f"| {s['stage']} | {s['kind']} | {s['seconds']} |" for s in stage_info]
  total = sum(s["seconds"] for s in stage_info)
  md += ["", f"Total stage time: {total:.0f} s."]
  report_path = os.path.join(workdir, "report.md")
  files.write_text(os.path.join(out, "report.md"), "\n".join(md) + "\n")
  return {"report": report_path, "results": os.path.join(workdir, "results.json"),
          "plots": plots, "findings": found}
