"""The study's plots (matplotlib, Agg): budget curves, the proxy where the policy
samples, classification against generation. An online arm is drawn solid, an
offline one dashed; error bars are the shared bootstrap's standard errors.
"""
from __future__ import annotations

import textwrap

import numpy as np

from alignment import stats
from alignment.study import arms as arms_lib


def _plt():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


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


def _curves_plot(ctx: arms_lib.Context, arms: list[str], path: str, field: str, x: str,
                 title: str, xlabel: str, ylabel: str, mark_peak: bool = False,
                 hline: float = 0.5):
  """One line per arm: its mean curve of `field` against KL or step, +- 1 s.e."""
  fig, ax = _plt().subplots(figsize=(7, 4.5))
  for arm in arms:
    cv = ctx.cv(arm)
    y = getattr(cv, field)
    if y is None:
      continue
    xs = np.maximum(cv.kl[0], 1e-3) if x == "kl" else cv.steps
    seeds = ctx.data[arm].seeds
    label = arm + (f" ({seeds} seeds)" if seeds > 1 else "") + (
        "" if seeds >= arms_lib.MIN_SEEDS else " (not voted)")
    se = np.nan_to_num(ctx.boot.se(y))  # items and seeds, as every interval
    line = ax.errorbar(xs, y[0], yerr=se, fmt="-o" if ctx.is_online(arm) else "--o", ms=3,
                       capsize=2, label=label)
    if mark_peak:
      j = int(stats.peak_index(y)[0])
      ax.plot([xs[j]], [y[0, j]], "*", ms=12, color=line[0].get_color())
  _save(fig, ax, path, title, xlabel, ylabel, log_x=(x == "kl"), hline=hline)


def plot_budget(ctx: arms_lib.Context, arms: list[str], path: str, title: str):
  """Golden win rate against KL from SFT, one curve per arm (the paper's budget curves)."""
  _curves_plot(ctx, arms, path, "win", "kl", title + "  (* = peak of the mean curve)",
               "KL(pi || pi_sft)  (exact, per response; log scale; SFT point at 1e-3)",
               "golden win rate vs reference (+- 1 s.e.)", mark_peak=True)


def plot_agreement(ctx: arms_lib.Context, arms: list[str], path: str):
  """The proxy's agreement with the golden judge on each policy's own samples."""
  _curves_plot(ctx, arms, path, "agreement", "kl",
               "The proxy where the policy samples (paper Figs. 6-7)",
               "KL(pi || pi_sft)  (log scale)",
               "proxy-golden agreement on pi's samples (+- 1 s.e.)")


def plot_chosen_logprob(ctx: arms_lib.Context, arms: list[str], path: str):
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


def plot_judge_axis(block: dict, path: str):
  """The judge-quality axis (results.json's judge_axis block): online (each judge) -
  offline IPO, envelope from KL 0, against the judge's held-out agreement with the
  golden judge; one series each for the noisy golden judges and the learned proxies.
  Error bars: the differences' 95% intervals (vertical) and the agreements' Wilson
  intervals (horizontal); a dotted line at each series' interpolated crossover."""
  fig, ax = _plt().subplots(figsize=(7, 4.5))
  styles = {"noisy_golden": ("o", "-", "noisy golden judge (flipped verdicts)"),
            "learned_proxy": ("s", "--", "learned proxy PM")}
  for series, (marker, line, label) in styles.items():
    named = sorted(((n, e) for n, e in block["judges"].items() if e["series"] == series and
                    e.get("agreement") and
                    e["envelope_minus_offline_ipo"]["estimate"] is not None),
                   key=lambda ne: ne[1]["agreement"]["agreement"])
    if not named:
      continue
    names, pts = [n for n, _ in named], [e for _, e in named]
    x = np.array([e["agreement"]["agreement"] for e in pts])
    y = np.array([e["envelope_minus_offline_ipo"]["estimate"] for e in pts])
    lo = np.array([e["envelope_minus_offline_ipo"]["interval"][0] for e in pts])
    hi = np.array([e["envelope_minus_offline_ipo"]["interval"][1] for e in pts])
    xlo = np.array([e["agreement"]["interval"][0] for e in pts])
    xhi = np.array([e["agreement"]["interval"][1] for e in pts])
    drawn = ax.errorbar(x, y, yerr=[np.nan_to_num(y - lo), np.nan_to_num(hi - y)],
                        xerr=[np.nan_to_num(x - xlo), np.nan_to_num(xhi - x)],
                        fmt=marker + line, ms=5, capsize=3, label=label)
    for xi, yi, name in zip(x, y, names):
      ax.annotate(name, (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7)
    cross = block["series"].get(series, {}).get("envelope", {}).get("crossover")
    if cross is not None:
      ax.axvline(cross, color=drawn[0].get_color(), ls=":", lw=1,
                 label=f"{series.replace('_', ' ')} crossover {cross:.3f}")
  _save(fig, ax, path, "The judge-quality axis: online (that judge) - offline IPO, envelope "
        "from KL 0 (95% intervals)", "judge's agreement with the golden judge on held-out SFT "
        "pairs (Wilson 95%)", "online - offline IPO golden win rate, envelope", log_x=False,
        hline=0.0)


def plot_scaling(block: dict, path: str):
  """H5's two axes (results.json's scaling block): per axis (rows: policy size, proxy
  size) alpha, beta, the fitted best and online - offline against the parameter count
  (log axis), online and offline arms as two series, 95% intervals as error bars."""
  plt = _plt()
  axes_drawn = [a for a in ("policy", "proxy") if block.get(a)]
  panels = (("alpha", "law", "alpha"), ("beta", "law", "beta"),
            ("fitted best (golden score)", "fitted_best", None),
            ("online - offline, fitted best", "online_minus_offline", None))
  fig, axes = plt.subplots(len(axes_drawn), len(panels), figsize=(13, 3.4 * len(axes_drawn)),
                           squeeze=False)
  for row, axis in zip(axes, axes_drawn):
    rows = block[axis]
    x = np.array([r["params"] for r in rows], float)
    for ax, (title, key, sub) in zip(row, panels):
      modes = (None,) if key == "online_minus_offline" else ("online", "offline")
      for mode in modes:
        if axis == "proxy" and mode == "offline" and key == "law":
          continue  # one offline arm (Fig. 1's) for every PM: nothing varies
        field = key if mode is None else f"{mode}_{key}"
        got = [(xi, r[field][sub] if sub else r[field]) for xi, r in zip(x, rows)
               if field in r]
        got = [(xi, v) for xi, v in got if v.get("estimate") is not None]
        if not got:
          continue
        xs = np.array([g[0] for g in got])
        y = np.array([g[1]["estimate"] for g in got], float)
        lo = np.array([np.nan if g[1]["interval"][0] is None else g[1]["interval"][0]
                       for g in got], float)
        hi = np.array([np.nan if g[1]["interval"][1] is None else g[1]["interval"][1]
                       for g in got], float)
        ax.errorbar(xs, y, yerr=[np.nan_to_num(y - lo), np.nan_to_num(hi - y)], fmt="o-",
                    ms=4, capsize=3, label=mode or "online - offline")
      ax.set_xscale("log")
      ax.xaxis.set_minor_formatter(plt.NullFormatter())  # decades only: no crowded labels
      if key == "online_minus_offline":
        ax.axhline(0.0, color="grey", lw=0.5)
      ax.set_title(f"{axis} axis: {title}", fontsize=9)
      ax.set_xlabel(("policy" if axis == "policy" else "proxy PM") + " parameters")
      if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
  fig.suptitle("H5 scaling: Gao et al.'s law fitted per arm, against model size "
               "(95% intervals)", fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_laws(curves: dict, path: str):
  """Gao et al.'s laws through the points: per arm, the golden score gained over SFT
  against d = sqrt(KL) (its mean curve) and the fitted curve
  (`arms.law_points`: {arm: {form, d, gain, alpha, beta, r2}})."""
  from alignment import laws  # pylint: disable=g-import-not-at-top
  fig, ax = _plt().subplots(figsize=(7, 4.5))
  for arm, c in curves.items():
    d = np.asarray(c["d"], float)
    drawn = ax.plot(d, c["gain"], "o", ms=4)
    dense = np.linspace(0.0, float(np.nanmax(d)) * 1.05, 200)
    ax.plot(dense, laws.predict(c["form"], c["alpha"], c["beta"], dense), "-",
            color=drawn[0].get_color(),
            label=f"{arm}: {c['form']}, alpha {c['alpha']:.3f}, beta {c['beta']:.3f}, "
                  f"R^2 {c['r2']:.2f}")
  _save(fig, ax, path, "Gao et al.'s laws fitted: golden score gained over SFT against "
        "d = sqrt(KL)", "d = sqrt(KL to SFT)", "golden score - SFT's", log_x=False, hline=0.0)
