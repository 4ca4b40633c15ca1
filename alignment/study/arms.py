"""What a study's runs measured, as arms with one shared bootstrap: the layer every
experiment's findings, comparisons and tables read (alignment.study.report
assembles them).

Each alignment run becomes a curve: its SFT policy's evaluation (step 0, from
the `sft_eval` stage, measured against the same reference as every later point)
then one point per in-loop evaluation. Runs that differ only in their seed form
an ARM; an arm's curve is the mean over its seeds. Every number a verdict rests
on comes with a 95% interval from one shared bootstrap over seeds, win-rate
prompts and held-out pairs (`alignment.stats`).

Each finding is a list of claims "statistic > 0" (written out in the report).
A claim is VOTED unless it is shown only (`counts=False`: e.g. another finding's
claim, never counted twice), reads an arm with fewer than MIN_SEEDS seeds (its
seed variance cannot be estimated: shown, marked, not voted), or presupposes an
online advantage that finding 1 does not show (H1-H4 explain that advantage:
"not applicable: no online advantage to explain"). The voted claims' verdicts
are corrected for their number with Holm's step-down procedure (family-wise
error 5% per finding); the finding is reproduced when every voted claim is
supported after the correction, not reproduced when one is contradicted,
inconclusive otherwise (or when the set-up gate failed), and not applicable
when every claim it would vote presupposes the missing advantage. Claims of
"no better" or "matches" are contrasts against the effect they are set beside,
never fixed margins (see `alignment.stats`).
"""
from __future__ import annotations

import json
import math
import os
import re
from typing import Callable, Optional

import numpy as np

from alignment import files, laws, layout, stats

POINT_KEYS = ("kl", "golden_win_rate", "golden_win_rate_se", "proxy_win_rate",
              "classifier_accuracy", "chosen_logprob_delta", "mean_response_length",
              "proxy_golden_agreement")
MIN_SEEDS = 3  # an arm with fewer seeds is shown, never voted
NOT_APPLICABLE = "no online advantage to explain: finding 1 shows none"
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


def arm_data(workdir: str, runs: list[dict], labelled: bool = False) -> Optional[stats.ArmData]:
  """Stack an arm's seeds; None when a run is missing points or arrays. labelled: the
  study has several foundations, and each run's is recorded (`ArmData.foundations`)."""
  per_run = [run_arrays(workdir, r) for r in runs]
  if any(a is None or not a for a in per_run):
    return None
  steps = [tuple(p["step"] for p in r["points"]) for r in runs]
  if len(set(steps)) != 1:
    return None
  stack = lambda key: (np.stack([np.stack([p[key] for p in a]) for a in per_run])
                       if all(key in p for a in per_run for p in a) else None)
  kl = np.array([[float(np.mean(p["kl"])) for p in a] for a in per_run])
  # Runs on redrawn foundations (alignment.study.plan): their labels enter the intervals.
  more = {"foundations": np.array([r.get("foundation", 0) for r in runs])} if labelled else {}
  return stats.ArmData(steps=np.array(steps[0]), kl=kl, win=stack("golden_win"),
                       classifier=stack("classifier"), chosen=stack("chosen_delta"),
                       agreement=stack("agreement"), score=stack("golden_score"), **more)


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
    self.workdir, self.runs, self.data, self.seed = workdir, runs, data, seed
    self.arm_runs: dict[str, list[dict]] = {}
    for r in runs:
      self.arm_runs.setdefault(r["arm"], []).append(r)
    self.boot = stats.Bootstrap(data, resamples=resamples, seed=seed) if data else None
    self.memo: dict = {}  # what several experiments read once (finding 1's advantage)
    self._first: Optional["Context"] = None  # first_foundation(), built once

  @classmethod
  def from_workdir(cls, workdir: str, runs: list[dict], resamples: int,
                   seed: int = 0) -> "Context":
    arm_runs: dict[str, list[dict]] = {}
    for r in runs:
      arm_runs.setdefault(r["arm"], []).append(r)
    data = {}
    labelled = len({r.get("foundation", 0) for r in runs}) > 1
    for name, rs in arm_runs.items():
      d = arm_data(workdir, rs, labelled)
      if d is not None:
        data[name] = d
    return cls(runs, data, resamples, seed, workdir)

  def foundations(self) -> list[int]:
    """The foundation draws the runs stand on (alignment.study.plan, FOUNDATIONS)."""
    return sorted({r.get("foundation", 0) for r in self.runs})

  def first_foundation(self) -> "Context":
    """The runs on the first foundation only (this context where there is one): what an
    experiment that ran there alone is compared with. The memo is shared (finding 1 is
    the study's, over every foundation)."""
    if self.foundations() == [0] or not self.runs:
      return self
    if self._first is None:
      self._first = self._first_foundation()
    return self._first

  def _first_foundation(self) -> "Context":
    runs = [r for r in self.runs if r.get("foundation", 0) == 0]
    resamples = self.boot.resamples if self.boot else 0
    if self.workdir:  # read again: an arm whose foundations' runs do not stack is here too
      out = Context.from_workdir(self.workdir, runs, resamples, self.seed)
      out.memo = self.memo
      return out
    data = {}
    for arm, d in self.data.items():
      keep = np.array([r.get("foundation", 0) == 0 for r in self.arm_runs[arm]])
      if keep.any():
        data[arm] = stats.ArmData(
            steps=d.steps, kl=d.kl[keep], win=d.win[keep],
            **{k: None if getattr(d, k) is None else getattr(d, k)[keep]
               for k in ("classifier", "chosen", "agreement", "score")})
    out = Context(runs, data, resamples, self.seed, self.workdir)
    out.memo = self.memo
    return out

  def over(self, arms) -> "Context":
    """The context in which every one of `arms` has all its runs: this one where each
    has runs on every foundation, else the first foundation's (`first_foundation`), so
    that one claim never mixes pooled arms with arms that ran on the first alone."""
    every = set(self.foundations())
    if all({r.get("foundation", 0) for r in self.arm_runs.get(a, [])} == every for a in arms):
      return self
    return self.first_foundation()

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

  def claim(self, text: str, fn: Callable[[], np.ndarray], counts: bool = True,
            presupposes_advantage: bool = False) -> dict:
    """A claim "fn() > 0" with its interval. counts=False: shown, never voted;
    presupposes_advantage: it explains an online advantage (voted only where finding
    1 shows one, `finding`)."""
    c = self.boot.claim(lambda _: fn())
    return {"claim": text, **c, "counts": counts,
            "presupposes_advantage": presupposes_advantage}

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

  def is_online(self, arm: str) -> bool:
    return any(r["mode"] == "online" for r in self.arm_runs.get(arm, []))


def arm_order(names) -> list[str]:
  """Arm names sorted with their numbers as numbers (stale4 before stale16)."""
  return sorted(names, key=lambda name: [(0, int(t), "") if t.isdigit() else (1, 0, t)
                                         for t in re.split(r"(\d+)", name) if t])


def holm_verdicts(claims: list[dict], alpha: float = 0.05) -> list[str]:
  """Each claim's verdict after Holm's step-down correction over the list: supported
  or contradicted (by its estimate's sign) where rejected, else unclear."""
  ps = [c["p"] if c.get("p") is not None and c.get("estimate") is not None else 1.0
        for c in claims]
  return [("supported" if c["estimate"] > 0 else "contradicted") if rejected else "unclear"
          for c, rejected in zip(claims, stats.holm(ps, alpha))]


def claim_status(part: dict, advantage: Optional[bool]) -> str:
  """voted | shown (not counted) | not applicable | few seeds."""
  if not part.get("counts", True):
    return "shown"
  if part.get("presupposes_advantage") and not advantage:
    return "not applicable"
  if part.get("min_seeds") is not None and part["min_seeds"] < MIN_SEEDS:
    return "few seeds"
  return "voted"


def finding(fid: int, text: str, parts: list[dict], numbers: dict, gate: dict,
            rule: str, advantage: Optional[bool] = None,
            setup: Optional[str] = None) -> dict:
  """A finding's entry in results.json (the module docstring has the rules): each
  part's status and corrected verdict, the finding's verdict from its voted claims
  (every one inconclusive when the set-up gate failed), the first voted claim's
  estimate. advantage: whether finding 1 shows an online advantage (claims that
  presuppose one are voted only then). setup: why the finding's own set-up check
  failed (every claim inconclusive, as for the gate), None when it held."""
  for p in parts:
    p["status"] = claim_status(p, advantage)
  voted = [p for p in parts if p["status"] == "voted"]
  for p, v in zip(voted, holm_verdicts(voted)):
    p["holm_verdict"] = v
  verdict, reason = stats.combine([p["holm_verdict"] for p in voted]), None
  if not voted and any(p["status"] == "not applicable" for p in parts):
    verdict, reason = "not applicable", NOT_APPLICABLE
  elif not voted and any(p["status"] == "few seeds" for p in parts):
    reason = f"its arms have fewer than {MIN_SEEDS} seeds: shown, not voted"
  if setup:
    verdict, reason = "inconclusive", f"inconclusive: {setup} (set-up check)"
  if not gate.get("gate_passed"):
    reason = "inconclusive: the proxy cannot rank the policy's samples (set-up gate)"
    verdict = "inconclusive"
  main = (voted or parts or [{}])[0]
  return {"id": fid, "finding": text, "verdict": verdict, "reason": reason,
          "estimate": r(main.get("estimate"), 4),
          "interval": [r(x, 4) for x in main.get("interval", [None, None])],
          "parts": [{**p, "estimate": r(p.get("estimate"), 4),
                     "interval": [r(x, 4) for x in p.get("interval", [None, None])],
                     **({"p": r(p["p"], 4)} if p.get("p") is not None else {})}
                    for p in parts],
          "numbers": numbers, "rule": rule + "; Holm's correction over the voted claims"}


def pooled_peak(ctx: Context, arms: list[str]) -> np.ndarray:
  """The best of several arms' peaks, per replicate (a mode pooled over betas)."""
  return np.max(np.stack([ctx.peak(a) for a in arms]), axis=0)


def rise_and_fall(ctx: Context, arm: str) -> np.ndarray:
  """min(peak - start, peak - final): above 0 when the curve rises, then falls."""
  return np.minimum(ctx.peak(arm) - ctx.start(arm), ctx.peak(arm) - ctx.final(arm))


FEW_SEEDS = f"not read (fewer than {MIN_SEEDS} seeds)"


def versus(ctx: Context, arms: list[str], base: str, name: str) -> dict:
  """Each arm against `base` (seed-pooled, seeds matched where the arms share them):
  the peak difference and the envelope gap from KL 0, with intervals (positive: the
  arm does better), and where it stands ('reading': above, below or no difference
  detected, after Holm's correction over every comparison of the call; an arm with
  fewer than MIN_SEEDS seeds is not read). Keys name the base as `name`."""
  out, claims = {}, []
  for arm in arms:
    peak = ctx.claim(arm, lambda a=arm: ctx.peak(a) - ctx.peak(base))
    env = ctx.claim(arm, lambda a=arm: stats.envelope_gap([ctx.cv(a)], [ctx.cv(base)]))
    out[arm] = {f"peak_minus_{name}": _value(peak), f"envelope_minus_{name}": _value(env),
                **arm_numbers(ctx, arm), "reading": {"peak": FEW_SEEDS, "envelope": FEW_SEEDS}}
    claims += [(arm, "peak", peak), (arm, "envelope", env)]
  voted = [(a, k, c) for a, k, c in claims
           if c.get("min_seeds") is None or c["min_seeds"] >= MIN_SEEDS]
  for (arm, k, c), v in zip(voted, holm_verdicts([c for _, _, c in voted])):
    out[arm]["reading"][k] = {"supported": "above", "contradicted": "below"}.get(
        v, "no difference detected") if c.get("estimate") is not None else "n/a"
  return out


def _value(c: dict) -> dict:
  return {"estimate": r(c["estimate"], 4), "interval": [r(x, 4) for x in c["interval"]],
          **({"p": r(c["p"], 4)} if c.get("p") is not None else {})}


def arm_numbers(ctx: "Context", arm: str) -> dict:
  """An arm's peak (with its interval), where it peaks and where it ends, and its
  fitted law (`law`)."""
  cv = ctx.cv(arm)
  j = int(stats.peak_index(cv.win)[0])
  out = {"peak": ctx.value(lambda: ctx.peak(arm)), "kl_at_peak": r(cv.kl[0, j]),
         "peak_step": int(cv.steps[j]), "final": r(cv.win[0, -1]),
         "final_kl": r(cv.kl[0, -1]), "seeds": ctx.data[arm].seeds,
         "still_rising": bool(j == cv.win.shape[1] - 1)}  # peaks at its last point
  fitted = law(ctx, arm)
  if fitted:
    out["law"] = fitted
  return out


LAW_PEAK_CAP = 1e3  # a fitted peak beyond d = sqrt(KL) = 1000 is no peak (`law`)


def law_form(ctx: "Context", arm: str) -> str:
  """Gao et al.'s form for an arm: best-of-n's for Best-of-2 (maximum likelihood on the
  better of two samples), the RL form for every other algorithm."""
  runs = ctx.arm_runs.get(arm) or [{}]
  return "bon" if runs[0].get("algorithm") == "best_of_2" else "rl"


def law_fit(ctx: "Context", arm: str):
  """The arm's law fitted on every replicate column: golden score gained over the SFT
  point against d = sqrt(KL) (`alignment.laws.fit_curve`); None without scores."""
  cv = ctx.cv(arm)
  if cv.score is None:
    return None
  return laws.fit_curve(law_form(ctx, arm), cv.kl, cv.score)


def law_best(ctx: "Context", arm: str) -> Optional[np.ndarray]:
  """The arm's FITTED BEST per replicate column: the golden score at the highest point
  of its fitted law within its reach, its start score plus R(min(d*, d_max)) (d*: the
  fitted peak, `laws.peak`; d_max: the largest d = sqrt(KL) it was evaluated at, where
  the fitted curve does not turn down before it). A smoothed peak: the law through
  every point rather than the highest of noisy points. None without scores."""
  fit = law_fit(ctx, arm)
  if fit is None:
    return None
  cv = ctx.cv(arm)
  dist = laws.distance(cv.kl)  # NaN in a jackknife column that leaves out an arm's only seed
  d_max = np.max(np.where(np.isnan(dist), -np.inf, dist), axis=-1)
  d_max = np.where(np.isfinite(d_max), d_max, np.nan)
  d_star, _ = fit.peak()
  at = np.where(np.isfinite(d_star), np.minimum(d_star, d_max), d_max)
  return cv.score[:, 0] + laws.predict(fit.form, fit.alpha, fit.beta, np.maximum(at, 0.0))


def law_points(ctx: "Context", arms: list[str]) -> dict:
  """What `plots.plot_laws` draws: each arm's mean points (d, gain) and its fit."""
  out = {}
  for arm in arms:
    fit = law_fit(ctx, arm)
    if fit is None or not np.isfinite(fit.alpha[0]):
      continue
    cv = ctx.cv(arm)
    out[arm] = {"form": fit.form, "d": laws.distance(cv.kl[0]).tolist(),
                "gain": (cv.score[0] - cv.score[0, 0]).tolist(), "alpha": float(fit.alpha[0]),
                "beta": float(fit.beta[0]), "r2": float(fit.r2[0])}
  return out


def law_lines(ctx: "Context", arms: list[str]) -> list[str]:
  """The report's lines on the arms' fitted laws."""
  out = []
  for arm in arms:
    f = law(ctx, arm)
    if f:
      where = (f"fitted peak at KL {fmt(f['peak_kl'])}" if f["peak_kl"]["estimate"] is not None
               else "the fitted curve does not turn down within reach" if not f["turns_down"]
               else "fitted peak not read (too few finite resamples)")
      out.append(f"- {arm}: {f['form']} law, alpha {fmt(f['alpha'])}, beta {fmt(f['beta'])}, "
                 f"{where}; R^2 {f['r2']} over {f['points']} points")
  if not out:
    return []
  return (["Gao et al. 2022's laws, fitted to each arm's mean golden score gained over SFT "
           "against d = sqrt(KL) (RL: d (alpha - beta ln d); best-of-n: d (alpha - beta d)); "
           "95% intervals from the same replicate columns as every other number:", ""]
          + out + [""])


def law(ctx: "Context", arm: str) -> dict | None:
  """Gao et al. 2022's law fitted to the arm's mean curve of golden score against d =
  sqrt(KL): R(d) = d (alpha - beta ln d) (RL) or d (alpha - beta d) (best-of-n), with
  intervals on alpha, beta and the KL where the fitted curve peaks (from the same
  replicate columns as every other interval; None for the peak when the fitted curve
  does not turn down), its R^2 and RMSE on the data."""
  fit = law_fit(ctx, arm)
  if fit is None or not np.isfinite(fit.alpha[0]):
    return None
  d_star, gain = fit.peak()
  # Where the fitted curve does not turn down (beta <= 0) d* is inf: no peak; one beyond
  # d = 1000 (KL 1e6, far past any run) counts as none too. A peak before the first
  # evaluated point (a curve that falls from the start) is placed at that point.
  d = laws.distance(ctx.cv(arm).kl[0])
  d_min = float(np.min(d[d > 0])) if np.any(d > 0) else 1.0
  turns = np.isfinite(d_star) & (d_star <= LAW_PEAK_CAP)
  gain = np.where(turns, gain, np.inf)
  with np.errstate(divide="ignore", invalid="ignore"):
    # The peak's KL is positive and skewed: its interval is taken on log(KL), then mapped
    # back (bounded: the log's range is [log d_min^2, log 1e6]).
    log_kl = np.where(turns, 2.0 * np.log(np.clip(d_star, d_min, LAW_PEAK_CAP)), np.inf)
  peak_kl = ctx.value(lambda: log_kl)
  if peak_kl["estimate"] is not None:
    with np.errstate(over="ignore"):
      peak_kl = {"estimate": r(np.exp(peak_kl["estimate"]), 4),
                 "interval": [r(min(float(np.exp(x)), LAW_PEAK_CAP ** 2), 4)
                              for x in peak_kl["interval"]]}
  return {"form": fit.form, "alpha": ctx.value(lambda: fit.alpha),
          "beta": ctx.value(lambda: fit.beta), "peak_kl": peak_kl,
          "peak_gain": ctx.value(lambda: gain), "turns_down": bool(turns[0]),
          "r2": r(fit.r2[0], 4), "rmse": r(fit.rmse[0], 4), "points": int(fit.n[0])}




def rising_lines(ctx: "Context", arms: list[str]) -> list[str]:
  """A line for each arm whose mean curve peaks at its last evaluation: cut off while
  still rising, so its peak is a lower bound of what more steps would reach."""
  out = []
  for arm in arms:
    n = arm_numbers(ctx, arm)
    if n["still_rising"]:
      out.append(f"- {arm} peaks at its last evaluation (step {n['peak_step']}, KL "
                 f"{n['kl_at_peak']}): still rising at the step cap, so its peak is a lower "
                 "bound.")
  return out + [""] if out else []


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
    seeds = f"{len(runs)}" + ("" if len(runs) >= MIN_SEEDS else " (not voted)")
    lines.append(f"| {arm} | {runs[0]['mode']} | {runs[0]['data']} | {seeds} | "
                 f"{fmt(n['peak'])} | {n['peak_step']} / {n['kl_at_peak']} | "
                 f"{r(cv.win[0, -1])} | {r(cv.kl[0, -1])} | {last('classifier_accuracy')} | "
                 f"{last('chosen_logprob_delta')} | {last('mean_response_length')} | "
                 f"{last('proxy_golden_agreement')} |")
  return lines
