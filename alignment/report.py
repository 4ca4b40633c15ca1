"""From a study's stages to results.json, report.md and PNG plots.

Each alignment run becomes a curve: one point per evaluation (its eval/*
records in metrics.jsonl) after the step-0 point of its SFT policy
(`sft_eval`). Each finding of PAPER.md that the study covers is checked by a
small rule written out below and in the report, and reported as measured:
`reproduced` is true or false with the numbers behind it. The rules use the
SOFT golden win rate (mean golden probability against the reference policy),
whose sampling error on 512 prompts is about 0.01.
"""
from __future__ import annotations

import json
import math
import os
from typing import Optional

import numpy as np

from alignment import checkpoint

POINT_KEYS = ("kl", "golden_win_rate", "proxy_win_rate", "classifier_accuracy",
              "chosen_logprob_delta", "mean_response_length")
EXTRA_KEYS = ("golden_win_rate_hard", "proxy_win_rate_hard", "golden_score",
              "reference_golden_score", "proxy_golden_agreement")
TOL = 0.02  # win-rate differences below this are noise at the default scale


# ---------------------------------------------------------------------------
# Runs and points
# ---------------------------------------------------------------------------


def _read_jsonl(path: str) -> list[dict]:
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


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
  for r in _read_jsonl(os.path.join(workdir, stage_name, "metrics.jsonl")):
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
    runs.append({"name": st.name, "group": st.group, **st.run,
                 "points": run_points(workdir, st.name, sft)})
  return runs


def training_stats(workdir: str, name: str, keys=("loss", "margin", "policy_chosen_logps",
                                                  "policy_rejected_logps")) -> dict:
  rows = [r for r in _read_jsonl(os.path.join(workdir, name, "metrics.jsonl")) if "loss" in r]
  return {k: np.array([r[k] for r in rows]) for k in keys if rows and k in rows[0]}


# ---------------------------------------------------------------------------
# Curve helpers
# ---------------------------------------------------------------------------


def peak(points: list[dict]) -> dict:
  valid = [p for p in points if p.get("golden_win_rate") is not None]
  if not valid:
    return {"golden_win_rate": float("nan"), "kl": float("nan"), "step": None}
  best = max(valid, key=lambda p: p["golden_win_rate"])
  return {"golden_win_rate": best["golden_win_rate"], "kl": best["kl"], "step": best["step"]}


def pooled_peak(runs: list[dict]) -> dict:
  pts = [p for r in runs for p in r["points"]]
  return peak(pts)


def frontier(points: list[dict], kl: float) -> float:
  """Best golden win rate among points with KL <= kl (a budget curve's envelope)."""
  vals = [p["golden_win_rate"] for p in points if p["kl"] is not None and p["kl"] <= kl]
  return max(vals) if vals else float("nan")


def overoptimises(points: list[dict]) -> tuple[bool, float, float]:
  """Win rate rises, then falls by more than TOL after its peak: (bool, peak, final)."""
  pk = peak(points)["golden_win_rate"]
  final = points[-1]["golden_win_rate"] if points else float("nan")
  rises = pk > (points[0]["golden_win_rate"] if points else 0) + TOL
  return bool(rises and final < pk - TOL), pk, final


def _by_name(runs):
  return {r["name"]: r for r in runs}


def _final(run, key):
  vals = [p[key] for p in run["points"] if p.get(key) is not None and p["step"] > 0]
  return vals[-1] if vals else float("nan")


def _r(x, nd=3):
  return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), nd)


# ---------------------------------------------------------------------------
# Findings (PAPER.md "Findings to reproduce")
# ---------------------------------------------------------------------------


def finding_1(runs, workdir):
  by = _by_name(runs)
  online = [r for r in runs if r["group"] == "fig1" and r["mode"] == "online"]
  offline = [r for r in runs if r["group"] == "fig1" and r["mode"] == "offline"]
  if not online or not offline:
    return None
  on_pts = [p for r in online for p in r["points"]]
  off_pts = [p for r in offline for p in r["points"]]
  on_peak, off_peak = peak(on_pts), peak(off_pts)
  kls = [p["kl"] for p in on_pts + off_pts if p["kl"] and p["kl"] > 0]
  lo = max(min(p["kl"] for p in on_pts if p["kl"] > 0), min(p["kl"] for p in off_pts
                                                              if p["kl"] > 0)) if kls else 0
  hi = min(max(p["kl"] for p in on_pts), max(p["kl"] for p in off_pts)) if kls else 0
  grid = np.geomspace(lo, hi, 12) if kls and hi > lo > 0 else []
  better = [frontier(on_pts, k) >= frontier(off_pts, k) - TOL / 2 for k in grid]
  share = float(np.mean(better)) if len(grid) else float("nan")
  oo_on = overoptimises(online[0]["points"])
  oo_off = [overoptimises(r["points"])[0] for r in offline]
  reproduced = (on_peak["golden_win_rate"] > off_peak["golden_win_rate"] + TOL / 2
                and share >= 0.75 and oo_on[0] and any(oo_off))
  del by, workdir
  return {
      "id": 1, "finding": "Both over-optimise; online is better at equal KL and has the "
      "higher peak",
      "reproduced": bool(reproduced),
      "numbers": {
          "online_peak_win_rate": _r(on_peak["golden_win_rate"]),
          "online_peak_kl": _r(on_peak["kl"]),
          "offline_peak_win_rate": _r(off_peak["golden_win_rate"]),
          "offline_peak_kl": _r(off_peak["kl"]),
          "share_of_common_kl_range_online_at_least_offline": _r(share),
          "online_overoptimises": oo_on[0], "online_final_win_rate": _r(oo_on[2]),
          "offline_runs_overoptimising": int(sum(oo_off)), "offline_runs": len(offline)},
      "rule": "online peak > offline pooled peak + 0.01; online envelope >= offline's "
              "(within 0.01) on >= 75% of the common log-KL range; online and at least one "
              "offline run end more than 0.02 below their peak",
  }


def finding_2(runs, workdir):
  by = _by_name(runs)
  if "replay_ordered" not in by or "online_ipo" not in by:
    return None
  a, b = training_stats(workdir, "online_ipo"), training_stats(workdir, "replay_ordered")
  n = min(len(a.get("loss", [])), len(b.get("loss", [])))
  rel = max(float(np.max(np.abs(a[k][:n] - b[k][:n]) / np.maximum(np.abs(a[k][:n]), 1e-6)))
            for k in a) if n else float("nan")
  shift = float(np.max(np.abs(a["loss"][1:n] - b["loss"][:n - 1]) /
                       np.maximum(np.abs(a["loss"][1:n]), 1e-6))) if n > 1 else float("nan")
  on = peak(by["online_ipo"]["points"])["golden_win_rate"]
  offline = [r for r in runs if r["group"] == "fig1" and r["mode"] == "offline"]
  off = pooled_peak(offline)["golden_win_rate"] if offline else float("nan")
  shuffled = peak(by["replay_shuffled"]["points"])["golden_win_rate"] \
      if "replay_shuffled" in by else float("nan")
  windows = sorted((int(r["name"][len("replay_window"):]), peak(r["points"])["golden_win_rate"])
                   for r in runs if r["name"].startswith("replay_window"))
  ladder = [on] + [w for _, w in windows] + [shuffled]
  graceful = all(x >= y - TOL for x, y in zip(ladder, ladder[1:]))
  tandem = rel < 1e-3
  gains_little = shuffled < on - (on - off) / 2 if on > off else False
  return {
      "id": 2, "finding": "Coverage (H1): ordered replay of D_online reproduces the online "
      "run (tandem); shuffled D_online gains little over offline; partial shuffles degrade "
      "gracefully",
      "reproduced": bool(tandem and gains_little and graceful),
      "numbers": {"max_relative_difference_ordered_replay": _r(rel, 8),
                  "max_relative_difference_shifted_one_batch": _r(shift, 4),
                  "online_peak": _r(on), "offline_golden_peak": _r(off),
                  "shuffled_replay_peak": _r(shuffled),
                  "window_peaks": {str(k): _r(v) for k, v in windows}},
      "rule": "ordered replay's training statistics within 0.1% of the online run's; "
              "shuffled replay's peak below the midpoint of offline and online peaks; peaks "
              "non-increasing (within 0.02) from online through windows to uniform",
  }


def finding_3(runs, workdir):
  by = _by_name(runs)
  if "offline_final_pairs" not in by or "online_ipo" not in by:
    return None
  base = by["online_ipo"]["points"][0]["golden_win_rate"] if by["online_ipo"]["points"] else 0.5
  on = peak(by["online_ipo"]["points"])["golden_win_rate"]
  h2 = peak(by["offline_final_pairs"]["points"])["golden_win_rate"]
  del workdir
  return {
      "id": 3, "finding": "Quality (H2): offline training on pairs from the final online "
      "policy, relabelled by the golden judge, barely beats SFT",
      "reproduced": bool(h2 - base < (on - base) / 2),
      "numbers": {"sft_win_rate": _r(base), "online_peak": _r(on),
                  "final_policy_pairs_peak": _r(h2)},
      "rule": "its peak gain over SFT is less than half the online run's",
  }


def finding_4(runs, workdir):
  online = [r for r in runs if r["mode"] == "online" and r["algorithm"] != "best_of_2"]
  offline = [r for r in runs if r["mode"] == "offline" and r["algorithm"] != "best_of_2"
             and r["data"] == "golden"]
  if not online or not offline:
    return None
  acc_on = float(np.mean([_final(r, "classifier_accuracy") for r in online]))
  acc_off = float(np.mean([_final(r, "classifier_accuracy") for r in offline]))
  win_on = float(np.mean([peak(r["points"])["golden_win_rate"] for r in online]))
  win_off = float(np.mean([peak(r["points"])["golden_win_rate"] for r in offline]))
  off_pts = [p for r in offline for p in r["points"] if p["step"] > 0]
  corr = float(np.corrcoef([p["classifier_accuracy"] for p in off_pts],
                           [p["golden_win_rate"] for p in off_pts])[0, 1]) \
      if len(off_pts) > 2 else float("nan")
  deltas = {r["name"]: _final(r, "chosen_logprob_delta") for r in runs}
  falls = all(v < 0 for v in deltas.values() if not math.isnan(v))
  d_on = float(np.mean([deltas[r["name"]] for r in online]))
  d_off = float(np.mean([deltas[r["name"]] for r in offline]))
  del workdir
  return {
      "id": 4, "finding": "Classification vs generation (H3): offline policies classify "
      "better, online ones generate better; chosen log-probs fall below SFT, most offline",
      "reproduced": bool(acc_off > acc_on and win_on > win_off and falls and d_off < d_on),
      "numbers": {"online_classifier_accuracy": _r(acc_on),
                  "offline_classifier_accuracy": _r(acc_off),
                  "online_peak_win_rate": _r(win_on), "offline_peak_win_rate": _r(win_off),
                  "offline_accuracy_win_rate_correlation": _r(corr),
                  "online_chosen_logprob_delta": _r(d_on),
                  "offline_chosen_logprob_delta": _r(d_off),
                  "runs_with_chosen_logprob_below_sft": int(sum(v < 0 for v in deltas.values())),
                  "runs": len(deltas)},
      "rule": "mean final classifier accuracy offline > online; mean peak win rate online > "
              "offline; every run's final chosen log-prob delta < 0, more negative offline",
  }


def finding_5(runs, workdir):
  by = _by_name(runs)
  need = ("online_best_of_2", "offline_best_of_2")
  if not all(k in by for k in need):
    return None
  on = peak(by["online_best_of_2"]["points"])["golden_win_rate"]
  off = peak(by["offline_best_of_2"]["points"])["golden_win_rate"]
  rep = peak(by["offline_best_of_2_replay"]["points"])["golden_win_rate"] \
      if "offline_best_of_2_replay" in by else float("nan")
  del workdir
  return {
      "id": 5, "finding": "Non-contrastive loss (H4): the gap persists for Best-of-2; "
      "offline Best-of-2 on shuffled D_online matches online",
      "reproduced": bool(on > off + TOL / 2 and abs(rep - on) <= TOL),
      "numbers": {"online_best_of_2_peak": _r(on), "offline_best_of_2_peak": _r(off),
                  "offline_best_of_2_shuffled_online_peak": _r(rep)},
      "rule": "online peak > offline peak + 0.01; shuffled-replay peak within 0.02 of online",
  }


def finding_6(runs, workdir):
  h5 = [r for r in runs if r["group"] in ("h5", "fig1") and r["algorithm"] == "ipo"
        and r["data"] in ("online", "golden")]
  sizes = sorted({r["hparams"]["model"] for r in h5}, key=_size_order)
  if len(sizes) < 2:
    return None
  rows = {}
  for size in sizes:
    on = [r for r in h5 if r["hparams"]["model"] == size and r["mode"] == "online"]
    off = [r for r in h5 if r["hparams"]["model"] == size and r["mode"] == "offline"]
    if on and off:
      rows[size] = (pooled_peak(on)["golden_win_rate"], pooled_peak(off)["golden_win_rate"])
  peaks = [rows[s][0] for s in rows]
  gaps = [rows[s][0] - rows[s][1] for s in rows]
  del workdir
  return {
      "id": 6, "finding": "Scaling (H5): peak win rate grows with policy size; the online/"
      "offline gap narrows slowly",
      "reproduced": bool(all(b > a for a, b in zip(peaks, peaks[1:]))
                         and all(b <= a + TOL for a, b in zip(gaps, gaps[1:]))
                         and all(g > 0 for g in gaps)),
      "numbers": {s: {"online_peak": _r(v[0]), "offline_peak": _r(v[1]),
                      "gap": _r(v[0] - v[1])} for s, v in rows.items()},
      "rule": "online peaks increase with size; gaps stay positive and do not grow",
  }


def finding_7(runs, workdir):
  by = _by_name(runs)
  if "offline_sft_pairs" not in by or "offline_gap_pairs" not in by:
    return None
  offline = [r for r in runs if r["group"] == "fig1" and r["mode"] == "offline"]
  base = pooled_peak(offline)["golden_win_rate"] if offline else float("nan")
  sft_pairs = peak(by["offline_sft_pairs"]["points"])["golden_win_rate"]
  gap_pairs = peak(by["offline_gap_pairs"]["points"])["golden_win_rate"]
  del workdir
  return {
      "id": 7, "finding": "Data sets (section 6): a wider quality gap does not help; one "
      "response sampled from SFT helps most",
      "reproduced": bool(gap_pairs <= base + TOL and sft_pairs > max(gap_pairs, base) + TOL / 2),
      "numbers": {"offline_golden_peak": _r(base), "wide_gap_peak": _r(gap_pairs),
                  "one_response_from_sft_peak": _r(sft_pairs)},
      "rule": "wide-gap peak <= D_golden peak + 0.02; SFT-response peak > both + 0.01",
  }


def _size_order(name: str) -> int:
  order = ["nano", "tiny", "mini", "small", "base", "large", "xl", "xxl"]
  return next((i for i, k in enumerate(order) if name.endswith("-" + k)), len(order))


FINDINGS = (finding_1, finding_2, finding_3, finding_4, finding_5, finding_6, finding_7)


def findings(runs, workdir) -> list[dict]:
  return [f for f in (fn(runs, workdir) for fn in FINDINGS) if f is not None]


# ---------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------


def _plt():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def plot_budget(runs: list[dict], path: str, title: str):
  plt = _plt()
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for r in runs:
    pts = [p for p in r["points"] if p["kl"] is not None]
    if not pts:
      continue
    x = [max(p["kl"], 1e-3) for p in pts]
    y = [p["golden_win_rate"] for p in pts]
    style = "-" if r["mode"] == "online" else "--"
    line, = ax.plot(x, y, style, marker="o", ms=3, label=r["name"])
    pk = peak(pts)
    ax.plot([max(pk["kl"], 1e-3)], [pk["golden_win_rate"]], "*", ms=12, color=line.get_color())
  ax.set_xscale("log")
  ax.set_xlabel("KL(pi || pi_sft)  (exact, per response; log scale)")
  ax.set_ylabel("golden win rate vs reference")
  ax.axhline(0.5, color="grey", lw=0.5)
  ax.set_title(title + "  (* = peak)")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_classifier(runs: list[dict], path: str):
  plt = _plt()
  fig, ax = plt.subplots(figsize=(6, 4.5))
  for mode, marker in (("online", "o"), ("offline", "x")):
    pts = [p for r in runs if r["mode"] == mode for p in r["points"] if p["step"] > 0
           and p.get("classifier_accuracy") is not None]
    ax.scatter([p["classifier_accuracy"] for p in pts], [p["golden_win_rate"] for p in pts],
               marker=marker, label=mode, alpha=0.7)
  ax.set_xlabel("policy-as-classifier accuracy on D_golden pairs")
  ax.set_ylabel("golden win rate")
  ax.axvline(0.5, color="grey", lw=0.5)
  ax.legend()
  ax.set_title("H3: classification vs generation")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_chosen_logprob(runs: list[dict], path: str):
  plt = _plt()
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for r in runs:
    pts = [p for p in r["points"] if p.get("chosen_logprob_delta") is not None]
    ax.plot([p["step"] for p in pts], [p["chosen_logprob_delta"] for p in pts],
            "-" if r["mode"] == "online" else "--", label=r["name"])
  ax.axhline(0, color="grey", lw=0.5)
  ax.set_xlabel("step")
  ax.set_ylabel("log pi(y_w) - log pi_sft(y_w)")
  ax.set_title("H3: chosen log-prob against SFT over training")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------

GROUP_TITLES = {"fig1": "Fig. 1: online vs offline IPO", "losses": "Other losses",
                "h1": "H1 coverage: D_online replayed", "h2": "H2 quality",
                "h4": "H4 Best-of-2", "h5": "H5 policy size", "sec6": "Section 6 data sets"}


def _table(runs: list[dict]) -> list[str]:
  lines = ["| run | mode | data | peak win rate | KL at peak | final KL | final classifier acc. | "
           "final chosen log-prob delta | final length |", "|---|---|---|---|---|---|---|---|---|"]
  for r in runs:
    pk = peak(r["points"])
    f = lambda k: _r(_final(r, k))
    lines.append(f"| {r['name']} | {r['mode']} | {r['data']} | {_r(pk['golden_win_rate'])} | "
                 f"{_r(pk['kl'])} | {f('kl')} | {f('classifier_accuracy')} | "
                 f"{f('chosen_logprob_delta')} | {f('mean_response_length')} |")
  return lines


def setup_check(workdir: str, stages, runs: list[dict]) -> dict:
  """Can the proxy steer the policy at all? The figures that say so.

  pm_held_out_accuracy: the proxy PM on held-out D_golden pairs (what PM
  training sees); sft_proxy_golden_agreement: the proxy's verdicts against the
  golden judge's on pairs of two SFT samples (what online training meets at
  step 0); sft_golden_score: the SFT policy's mean golden score. Per online
  run, the agreement at its final evaluation (over-optimisation lowers it).
  """
  out = {}
  for st in stages:
    if st.kind == "pm":
      evals = [r for r in _read_jsonl(os.path.join(workdir, st.name, "metrics.jsonl"))
               if "eval/accuracy" in r]
      if evals:
        out[f"{st.name}_held_out_accuracy"] = evals[-1]["eval/accuracy"]
    if st.kind == "eval":
      sft = sft_point(workdir, st.name)
      if sft:
        out[f"{st.name}_proxy_golden_agreement"] = sft.get("proxy_golden_agreement")
        out[f"{st.name}_golden_score"] = sft.get("golden_score")
  for r in runs:
    if r["mode"] == "online" and r["points"]:
      out[f"{r['name']}_final_proxy_golden_agreement"] = r["points"][-1].get(
          "proxy_golden_agreement")
  return out


def write(study, workdir: str, stages) -> dict:
  runs = collect_runs(workdir, stages)
  found = findings(runs, workdir)
  setup = setup_check(workdir, stages, runs)
  results = {"study": study.scale, "runs": [{k: v for k, v in r.items() if k != "group"}
                                            for r in runs], "findings": found, "setup": setup}
  checkpoint.write_json_atomic(os.path.join(workdir, "results.json"), results)
  plots = []
  groups = [g for g in GROUP_TITLES if any(r["group"] == g for r in runs)]
  for g in groups:
    name = f"budget_{g}.png"
    group_runs = [r for r in runs if r["group"] == g]
    if g in ("h1", "h2", "h4"):  # against the online run they are about
      group_runs = [r for r in runs if r["name"] == "online_ipo" and g != "h4"] + group_runs
    plot_budget(group_runs, os.path.join(workdir, name), GROUP_TITLES[g])
    plots.append(name)
  plot_classifier(runs, os.path.join(workdir, "classifier_vs_winrate.png"))
  plot_chosen_logprob(runs, os.path.join(workdir, "chosen_logprob.png"))
  plots += ["classifier_vs_winrate.png", "chosen_logprob.png"]
  stage_info = []
  for st in stages:
    path = os.path.join(workdir, st.name, "STAGE.json")
    if os.path.exists(path):
      with open(path) as f:
        stage_info.append(json.load(f))
  md = [f"# Study report ({study.scale})", "",
        "Golden win rate: mean golden probability P(policy beats reference) on the eval "
        "prompts; the reference is " + ("the golden policy" if study.golden_policy else
                                        "the SFT policy") + ". KL: exact, against SFT.", "",
        "## Findings", "", "| # | finding | reproduced | numbers | rule |", "|---|---|---|---|---|"]
  for f in found:
    md.append(f"| {f['id']} | {f['finding']} | {'yes' if f['reproduced'] else 'no'} | "
              f"`{json.dumps(f['numbers'])}` | {f['rule']} |")
  md += ["", "## Set-up check", "",
         "Held-out accuracy is the proxy PM on D_golden pairs; agreement is its verdict "
         "against the golden judge's on pairs of the policy's own samples (SFT: two SFT "
         "samples per prompt; an online run: its final policy against the reference). "
         "Agreement near 0.5 at SFT means the proxy gives the online policy little to "
         "follow, whatever its held-out accuracy.", "", "| quantity | value |", "|---|---|"]
  md += [f"| {k} | {_r(v)} |" for k, v in setup.items()]
  for g in groups:
    md += ["", f"## {GROUP_TITLES[g]}", "", f"![{g}](budget_{g}.png)", ""]
    md += _table([r for r in runs if r["group"] == g])
  md += ["", "## H3: classification vs generation", "", "![classifier](classifier_vs_winrate.png)",
         "", "![chosen log-prob](chosen_logprob.png)", "", "## Stages", "",
         "| stage | kind | seconds |", "|---|---|---|"]
  md += [f"| {s['stage']} | {s['kind']} | {s['seconds']} |" for s in stage_info]
  total = sum(s["seconds"] for s in stage_info)
  md += ["", f"Total stage time: {total:.0f} s."]
  report_path = os.path.join(workdir, "report.md")
  tmp = report_path + ".tmp"
  with open(tmp, "w") as f:
    f.write("\n".join(md) + "\n")
  os.replace(tmp, report_path)
  return {"report": report_path, "results": os.path.join(workdir, "results.json"),
          "plots": plots, "findings": found}
