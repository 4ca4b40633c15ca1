"""What a study's runs measured, as arms with one shared bootstrap: the layer every
experiment's findings, comparisons and tables read (alignment.study.report
assembles them).

Each alignment run becomes a curve: its SFT policy's evaluation (step 0, from
the `sft_eval` stage, measured against the same reference as every later point)
then one point per in-loop evaluation. Runs that differ only in their seed form
an ARM; an arm's curve is the mean over its seeds. Every number a verdict rests
on comes with a 95% interval from one shared bootstrap over seeds, win-rate
prompts and held-out pairs (`alignment.stats`).

Each finding is a list of claims "statistic > 0" (written out in the report);
a finding is reproduced when every counted claim's interval lies above 0, not
reproduced when one lies below 0, inconclusive otherwise (or when the set-up
gate failed). Claims of "no better" or "matches" are contrasts against the
effect they are set beside, never fixed margins (see `alignment.stats`).
"""
from __future__ import annotations

import json
import math
import os
import re
from typing import Callable, Optional

import numpy as np

from alignment import files, layout, stats

POINT_KEYS = ("kl", "golden_win_rate", "golden_win_rate_se", "proxy_win_rate",
              "classifier_accuracy", "chosen_logprob_delta", "mean_response_length",
              "proxy_golden_agreement")
EXTRA_KEYS = ("golden_win_rate_hard", "proxy_win_rate_hard", "golden_score",
              "reference_golden_score", "proxy_golden_agreement_vs_reference")


# ---------------------------------------------------------------------------
# Runs, points, arms
# ---------------------------------------------------------------------------


def read_arrays(path: str) -> Optional[dict]:
  if not os.path.exists(path):
    return None
  from alignment import evaluation  # pylint: disable=g-import-not-at-top
  return evaluation.load_arrays(path)


def sft_point(workdir: str, stage: str) -> Optional[dict]:
  """The SFT policy's own evaluation: the step-0 point of the runs that start from it."""
  path = layout.evaluation(layout.stage(workdir, stage))
  if not os.path.exists(path):
    return None
  with open(path) as f:
    points = json.load(f)
  return {"step": 0, **{k: v for k, v in points[0].items() if k != "step"}} if points else None


def run_points(workdir: str, stage_name: str, sft: Optional[dict]) -> list[dict]:
  points = [dict(sft)] if sft else []
  for r in files.read_jsonl(layout.metrics(layout.stage(workdir, stage_name))):
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
  out = []
  for p in run["points"]:
    stage = run["sft_eval"] if p["step"] == 0 else run["name"]
    a = read_arrays(layout.eval_arrays(layout.stage(workdir, stage), p["step"]))
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
  rows = [r for r in files.read_jsonl(layout.metrics(layout.stage(workdir, name))) if "loss" in r]
  return {k: np.array([r[k] for r in rows]) for k in keys if rows and k in rows[0]}


def r(x, nd=3):
  return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), nd)




class Context:
  """The arms of a study and their shared bootstrap.

  runs: the runs' metadata (name, arm, mode, group, algorithm, data, points);
  data: {arm: stats.ArmData}.
  `Context.from_workdir` reads both from a study's stages; tests build them directly.
  """

  def __init__(self, runs: list[dict], data: dict, resamples: int, seed: int = 0,
               workdir: str = ""):
    self.workdir, self.runs, self.data = workdir, runs, data
    self.arm_runs: dict[str, list[dict]] = {}
    for r in runs:
      self.arm_runs.setdefault(r["arm"], []).append(r)
    self.boot = stats.Bootstrap(data, resamples=resamples, seed=seed) if data else None

  @classmethod
  def from_workdir(cls, workdir: str, runs: list[dict], resamples: int,
                   seed: int = 0) -> "Context":
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
    return cls(runs, data, resamples, seed, workdir)

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
    return {"estimate": r(c["estimate"], 4), "interval": [r(x, 4) for x in c["interval"]]}

  def arm_of(self, mode: str, group: str, algorithm: str = "ipo") -> list[str]:
    """The arms of `group` of one mode and algorithm that have data, sorted."""
    return sorted({r["arm"] for r in self.runs if r["group"] == group and r["mode"] == mode
                   and r["algorithm"] == algorithm and r["arm"] in self.data})

  def group_arms(self, group: str) -> list[str]:
    """The arms of `group` that have data, numbers sorted as numbers."""
    return arm_order({r["arm"] for r in self.runs if r["group"] == group and r["arm"] in self.data})

  def run_arm(self, run_name: str) -> str:
    """A run as an arm of its own where its arm has other seeds, else its arm."""
    if "run:" + run_name in self.data:
      return "run:" + run_name
    return next(r["arm"] for r in self.runs if r["name"] == run_name)

  def is_online(self, arm: str) -> bool:
    runs = ([r for r in self.runs if r["name"] == arm[len("run:"):]] if arm.startswith("run:")
            else self.arm_runs.get(arm, []))
    return any(r["mode"] == "online" for r in runs)


def arm_order(names) -> list[str]:
  """Arm names sorted with their numbers as numbers (stale4 before stale16)."""
  return sorted(names, key=lambda name: [(0, int(t), "") if t.isdigit() else (1, 0, t)
                                         for t in re.split(r"(\d+)", name) if t])


def finding(fid: int, text: str, parts: list[dict], numbers: dict, gate: dict,
            rule: str) -> dict:
  """A finding's entry in results.json: its verdict from its counted claims (every
  one inconclusive when the set-up gate failed), the first counted claim's estimate."""
  counted = [p for p in parts if p.get("counts", True)]
  verdict = stats.combine([p["verdict"] for p in counted])
  reason = None
  if not gate.get("gate_passed"):
    reason = "inconclusive: the proxy cannot rank the policy's samples (set-up gate)"
    verdict = "inconclusive"
  main = counted[0] if counted else {}
  return {"id": fid, "finding": text, "verdict": verdict, "reason": reason,
          "estimate": r(main.get("estimate"), 4),
          "interval": [r(x, 4) for x in main.get("interval", [None, None])],
          "parts": [{**p, "estimate": r(p.get("estimate"), 4),
                     "interval": [r(x, 4) for x in p.get("interval", [None, None])]}
                    for p in parts],
          "numbers": numbers, "rule": rule}


def pooled_peak(ctx: Context, arms: list[str]) -> np.ndarray:
  """The best of several arms' peaks, per replicate (a mode pooled over betas)."""
  return np.max(np.stack([ctx.peak(a) for a in arms]), axis=0)


def rise_and_fall(ctx: Context, arm: str) -> np.ndarray:
  """min(peak - start, peak - final): above 0 when the curve rises, then falls."""
  return np.minimum(ctx.peak(arm) - ctx.start(arm), ctx.peak(arm) - ctx.final(arm))


def versus(ctx: Context, arms: list[str], base: str, name: str) -> dict:
  """Each arm against `base` (seed-pooled): the peak difference and the envelope gap
  from KL 0, with intervals (positive: the arm does better), and where it stands
  ('reading': above, below or no difference detected). Keys name the base as `name`."""
  out = {}
  for arm in arms:
    out[arm] = {
        f"peak_minus_{name}": ctx.value(lambda a=arm: ctx.peak(a) - ctx.peak(base)),
        f"envelope_minus_{name}": ctx.value(lambda a=arm: stats.envelope_gap(
            [ctx.cv(a)], [ctx.cv(base)])),
        **arm_numbers(ctx, arm)}
    out[arm]["reading"] = {k: side(out[arm][f"{k}_minus_{name}"]) for k in ("peak", "envelope")}
  return out


def arm_numbers(ctx: "Context", arm: str) -> dict:
  """An arm's peak (with its interval), where it peaks and where it ends."""
  cv = ctx.cv(arm)
  j = int(stats.peak_index(cv.win)[0])
  return {"peak": ctx.value(lambda: ctx.peak(arm)), "kl_at_peak": r(cv.kl[0, j]),
          "peak_step": int(cv.steps[j]), "final": r(cv.win[0, -1]),
          "final_kl": r(cv.kl[0, -1]), "seeds": ctx.data[arm].seeds}




def side(value) -> str:
  """Where an arm stands against online IPO on one difference, from its interval:
  'above' (the interval lies above 0), 'below', or 'no difference detected'."""
  if not isinstance(value, dict) or value.get("estimate") is None:
    return "n/a"
  return {"supported": "above", "contradicted": "below"}.get(
      stats.verdict(*value["interval"]), "no difference detected")



def fmt(v) -> str:
  if isinstance(v, dict) and "estimate" in v:
    if v["estimate"] is None:
      return "n/a"
    lo, hi = v["interval"]
    return f"{v['estimate']:.3f} [{lo:.3f}, {hi:.3f}]"
  return "n/a" if v is None else f"{v}"


def arm_table(ctx: Context, arms: list[str]) -> list[str]:
  """The report's table of arms: peak with its interval, final numbers."""
  lines = ["| arm | mode | data | seeds | peak win rate [95% CI] | step / KL at peak | final win "
           "rate | final KL | final classifier acc. | final chosen log-prob delta | final "
           "length | final agreement |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for arm in arms:
    runs = ctx.arm_runs[arm]
    cv = ctx.cv(arm)
    n = arm_numbers(ctx, arm)
    last = lambda k: r(np.mean([r["points"][-1].get(k) for r in runs
                                 if r["points"][-1].get(k) is not None]) if any(
                                     r["points"][-1].get(k) is not None for r in runs) else None)
    lines.append(f"| {arm} | {runs[0]['mode']} | {runs[0]['data']} | {len(runs)} | "
                 f"{fmt(n['peak'])} | {n['peak_step']} / {n['kl_at_peak']} | "
                 f"{r(cv.win[0, -1])} | {r(cv.kl[0, -1])} | {last('classifier_accuracy')} | "
                 f"{last('chosen_logprob_delta')} | {last('mean_response_length')} | "
                 f"{last('proxy_golden_agreement')} |")
  return lines
