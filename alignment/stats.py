"""Intervals behind the study's verdicts: proportions, means, and a bootstrap over
seeds, prompts and pairs.

Everything a finding claims is a number computed from evaluation curves (a
peak, a difference of peaks, an envelope gap); its 95% interval comes from a
bootstrap that resamples what varies:

  prompts  the win-rate prompts, shared by every run (the same fixed eval
           prompts), so comparisons between runs are paired over prompts;
  pairs    the held-out preference pairs of the classifier metrics, shared too;
  seeds    the runs of an arm (one algorithm x data x hyper-parameters, several
           seeds), resampled within the arm.

An arm's curve at evaluation j is the mean over its seeds and the prompts of
the per-prompt golden win rates; its KL the mean over seeds of each run's KL.
`Bootstrap` draws the weights once and hands every claim the same replicates
(replicate 0 is the data itself, all weights 1), so the intervals of several
claims are computed on the same resamples.

A claim is "statistic > 0". Its verdict from the percentile interval [lo, hi]:
supported when lo > 0, contradicted when hi < 0, unclear otherwise. Claims of
"no better" or "matches" are written as contrasts with the effect they are set
against (e.g. "the shuffled replay's gain over offline is less than half of
online's" is online + offline - 2 * shuffled > 0), so no fixed margin enters.

A peak is the maximum of the mean curve; the maximum of noisy points is biased
upwards, and the bootstrap interval of a maximum is approximate; both are the
usual price of reporting peaks (the paper does) and are stated in the report.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Mapping, Sequence

import numpy as np

Z95 = 1.959963984540054


def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
  """Wilson score interval of a binomial proportion (95% by default)."""
  if n <= 0:
    return float("nan"), float("nan")
  p = successes / n
  denom = 1 + z * z / n
  centre = (p + z * z / (2 * n)) / denom
  half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
  return max(0.0, centre - half), min(1.0, centre + half)


def mean_se(x) -> tuple[float, float]:
  """Mean and its standard error (sample standard deviation / sqrt(n)); NaNs dropped."""
  x = np.asarray(x, np.float64)
  x = x[~np.isnan(x)]
  if x.size == 0:
    return float("nan"), float("nan")
  se = float(np.std(x, ddof=1) / math.sqrt(x.size)) if x.size > 1 else float("nan")
  return float(np.mean(x)), se


def normal_interval(mean: float, se: float, z: float = Z95) -> tuple[float, float]:
  return mean - z * se, mean + z * se


def verdict(lo: float, hi: float) -> str:
  """supported (lo > 0) | contradicted (hi < 0) | unclear, for a claim "x > 0"."""
  if math.isnan(lo) or math.isnan(hi):
    return "unclear"
  return "supported" if lo > 0 else "contradicted" if hi < 0 else "unclear"


# ---------------------------------------------------------------------------
# Curves of an arm, and their bootstrap
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class ArmData:
  """The evaluation arrays of one arm's runs (S seeds, J evaluations each).

  steps [J]; kl [S, J] (each run's mean KL); win [S, J, P] per-prompt golden win
  rates; classifier [S, J, Q] and chosen [S, J, Q] per-pair classifier correctness
  (1, 0, or 1/2 for a tie) and chosen log-prob delta; length [S, J] mean response
  length; agreement [S, J, P] proxy-golden agreement per prompt (NaN where
  golden tied); any of the per-item arrays may be None when not measured.
  """
  steps: np.ndarray
  kl: np.ndarray
  win: np.ndarray
  classifier: np.ndarray | None = None
  chosen: np.ndarray | None = None
  agreement: np.ndarray | None = None

  @property
  def seeds(self) -> int:
    return self.kl.shape[0]


@dataclasses.dataclass
class Curves:
  """An arm's mean curves for every replicate: [R, J] each (R = 1 + resamples)."""
  steps: np.ndarray
  kl: np.ndarray
  win: np.ndarray
  classifier: np.ndarray | None
  chosen: np.ndarray | None
  agreement: np.ndarray | None


def _weighted_mean(values_sjx: np.ndarray, seed_w_rs: np.ndarray,
                   item_w_rx: np.ndarray | None) -> np.ndarray:
  """[R, J]: sum_s sum_x w_s w_x v[s, j, x] / sum(w_s w_x [v not NaN])."""
  v = np.nan_to_num(values_sjx, nan=0.0)
  present = (~np.isnan(values_sjx)).astype(np.float64)
  if item_w_rx is None:
    item_w_rx = np.ones((seed_w_rs.shape[0], values_sjx.shape[2]))
  num = np.einsum("rs,sjx,rx->rj", seed_w_rs, v, item_w_rx, optimize=True)
  den = np.einsum("rs,sjx,rx->rj", seed_w_rs, present, item_w_rx, optimize=True)
  with np.errstate(invalid="ignore", divide="ignore"):
    return num / den


class Bootstrap:
  """Shared resamples of prompts and pairs, and per-arm resamples of seeds.

  arms: {name: ArmData}; prompts P and pairs Q must be the same count in every
  arm (the same fixed sets). `curves(name)` gives an arm's mean curves for every
  replicate; `claim(fn)` evaluates fn(curves_by_arm) -> [R] and returns its
  estimate (replicate 0), 95% interval and verdict.
  """

  def __init__(self, arms: Mapping[str, ArmData], resamples: int = 2000, seed: int = 0):
    self.arms = dict(arms)
    self.resamples = resamples
    rng = np.random.default_rng(seed)
    sizes = {a.win.shape[2] for a in self.arms.values()}
    if len(sizes) > 1:
      raise ValueError(f"arms evaluate different numbers of prompts: {sorted(sizes)}")
    p = sizes.pop() if sizes else 0
    pairs = {a.classifier.shape[2] for a in self.arms.values() if a.classifier is not None}
    if len(pairs) > 1:
      raise ValueError(f"arms evaluate different numbers of pairs: {sorted(pairs)}")
    q = pairs.pop() if pairs else 0
    ones = lambda n: np.ones((1, n))
    draw = lambda n: rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)
    self.prompt_w = np.concatenate([ones(p), draw(p)]) if p else None
    self.pair_w = np.concatenate([ones(q), draw(q)]) if q else None
    self.seed_w = {name: np.concatenate([ones(a.seeds), draw(a.seeds)])
                   for name, a in sorted(self.arms.items())}
    self._curves: dict[str, Curves] = {}

  def curves(self, name: str) -> Curves:
    if name not in self._curves:
      a, sw = self.arms[name], self.seed_w[name]
      norm = sw / sw.sum(1, keepdims=True)
      # Items may be a prefix of the shared set (e.g. the proxy's first N prompts).
      per_item = lambda x, w: None if x is None else _weighted_mean(
          x, sw, None if w is None else w[:, :x.shape[2]])
      self._curves[name] = Curves(
          steps=a.steps, kl=norm @ a.kl, win=_weighted_mean(a.win, sw, self.prompt_w),
          classifier=per_item(a.classifier, self.pair_w),
          chosen=per_item(a.chosen, self.pair_w),
          agreement=per_item(a.agreement, self.prompt_w))
    return self._curves[name]

  def claim(self, statistic: Callable[[Callable[[str], Curves]], np.ndarray]) -> dict:
    """{estimate, interval [lo, hi], verdict} of statistic(curves) > 0."""
    values = np.asarray(statistic(self.curves), np.float64)
    finite = values[1:][np.isfinite(values[1:])]
    if not np.isfinite(values[0]) or finite.size < 0.9 * (values.size - 1):
      return {"estimate": None, "interval": [None, None], "verdict": "unclear"}
    lo, hi = np.percentile(finite, [2.5, 97.5])
    return {"estimate": float(values[0]), "interval": [float(lo), float(hi)],
            "verdict": verdict(float(lo), float(hi))}


# ---------------------------------------------------------------------------
# Statistics of curves ([R, J] -> [R])
# ---------------------------------------------------------------------------


def peak(win_rj: np.ndarray) -> np.ndarray:
  """The highest point of each replicate's mean curve."""
  return np.nanmax(win_rj, axis=1)


def peak_index(win_rj: np.ndarray) -> np.ndarray:
  return np.nanargmax(np.where(np.isnan(win_rj), -np.inf, win_rj), axis=1)


def final(curve_rj: np.ndarray) -> np.ndarray:
  return curve_rj[:, -1]


def envelope(kl_rj: np.ndarray, win_rj: np.ndarray, grid: np.ndarray) -> np.ndarray:
  """Best win rate among points with KL <= k, for each k of `grid`: [R, G].

  NaN where no point has KL <= k (never at k >= the curve's first KL: the SFT
  point, KL 0, belongs to every curve)."""
  ok = kl_rj[:, :, None] <= grid[None, None, :]
  vals = np.where(ok, win_rj[:, :, None], -np.inf)
  best = vals.max(axis=1)
  return np.where(np.isinf(best), np.nan, best)


def envelope_gap(a: Curves | Sequence[Curves], b: Curves | Sequence[Curves],
                 points: int = 64) -> np.ndarray:
  """Mean over KL in [0, K] of envelope(a) - envelope(b): [R]. Each side may be
  several curves (a sweep), pooled into one envelope (the best of them at each
  KL); K is the smaller of the two sides' largest mean KL (the common budget
  range, from KL 0)."""
  a = [a] if isinstance(a, Curves) else list(a)
  b = [b] if isinstance(b, Curves) else list(b)
  top = min(max(float(np.max(c.kl[0])) for c in a), max(float(np.max(c.kl[0])) for c in b))
  if not top > 0:
    return np.full(a[0].win.shape[0], np.nan)
  grid = np.linspace(0.0, top, points)
  pooled = lambda cs: np.nanmax(np.stack([envelope(c.kl, c.win, grid) for c in cs]), axis=0)
  return np.nanmean(pooled(a) - pooled(b), axis=1)


def interval_str(c: Mapping, digits: int = 3) -> str:
  """'+0.060 [0.030, 0.090]' for a claim's dict."""
  if c.get("estimate") is None:
    return "n/a"
  lo, hi = c["interval"]
  return f"{c['estimate']:+.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def combine(verdicts: Sequence[str]) -> str:
  """A finding from its parts: reproduced if every part is supported, not
  reproduced if any part is contradicted, inconclusive otherwise."""
  if any(v == "contradicted" for v in verdicts):
    return "not reproduced"
  if verdicts and all(v == "supported" for v in verdicts):
    return "reproduced"
  return "inconclusive"
