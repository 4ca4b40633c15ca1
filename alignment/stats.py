"""Intervals behind the study's verdicts: proportions, means, and an interval over
seeds, prompts and pairs.

Everything a finding claims is a number computed from evaluation curves (a
peak, a difference of peaks, an envelope gap). An arm's curve at evaluation j
is the mean over its seeds and the prompts of the per-prompt golden win rates;
its KL the mean over seeds of each run's KL. Two things vary:

  items  the win-rate prompts and the held-out preference pairs: the same fixed
         sets in every run, so comparisons between runs are paired over them;
  seeds  the runs of an arm (one algorithm x data x hyper-parameters, several
         seeds). A run's whole curve sits higher or lower than another's (its
         own offset, more than the noise of its points), so the seeds, not the
         points, are the replicates of an arm.

`Bootstrap` evaluates a statistic once on a replicate axis of columns: the data;
R resamples of the prompts and pairs (multinomial, the same draws for every arm)
with every seed kept; then, per arm, its n_a delete-one-seed columns (items at
weight 1, the other arms at their data). From these

  V_item = variance over the item resamples (ddof 1);
  V_a    = (n_a - 1) / n_a * sum_k (theta_(a,k) - mean_k theta_(a,k))^2, the
           jackknife variance over arm a's seeds (exactly s^2 / n_a of the run
           means for a mean); 0 for an arm the statistic does not read, as its
           delete-one values equal the estimate;
  interval theta +- t_{0.975, df} sqrt(V_item + sum_a V_a),
  df     = V^2 / (sum_a V_a^2 / (n_a - 1) + V_item^2 / (P - 1)), Welch-Satterthwaite
           (P the smaller item set; capped at 1000).

Why not resample seeds too: with 3 seeds a bootstrap over seeds has 10 distinct
resamples, a variance (n-1)/n too small and a normal quantile where Student t
with n - 1 = 2 df belongs; a one-seed arm carries no seed variance at all. On
synthetic studies where each run has its own offset (tests/study/test_stats.py:
two arms of 3 seeds, 128 prompts, item noise 0.25 so an arm's mean has noise
0.013, 500 studies) the old percentile interval covered the true difference of
final points 84.0% of the time at offset sd 0.1; this one covers it 96.0%.

The within-run sampling noise of the items is counted twice: in V_item and again
in the spread of the run means that V_a measures. When runs differ little the
interval is conservative: coverage 99.2% with no offsets and 99.2% at offset sd
0.015 (about an arm mean's noise), 96.0% where offsets dominate; differences of
peaks 99.4 / 98.8 / 96.2%, envelope gaps 98.8 / 98.8 / 96.0%. One arm's peak,
where the prompt effect does not cancel, 98.8 / 96.6 / 91.8%: Satterthwaite's df
is estimated from the same data and rises when the 2-df seed part is small by
chance. `claim` also returns the two-sided p-value of "statistic != 0" on the
same t (for Holm's correction, `holm`, across a family of claims) and
min_seeds, the fewest seeds among the arms the statistic reads: a one-seed arm
(its delete-one column is NaN) adds no seed variance, so its claims' intervals
cover only when runs do not differ (96% with no offsets, 32% at offset sd 0.1)
and callers do not vote claims with min_seeds < 3.

Foundations. Every run stands on a foundation: the SFT policy, the preference data
D_golden and the proxy PM, drawn from the study seed. A study that redraws it runs each
arm's seeds on each of F draws (`ArmData.foundations`, a label per run). A foundation
shifts every arm's runs on it (a common effect, which cancels in differences between
arms) and shifts arms differently (an arm x foundation interaction, which does not).
Where the arms' runs carry F >= 2 labels, `Bootstrap` adds a block of F columns, column
f every arm with all its runs on foundation f left out at once (the delete-one-cluster
jackknife, items at weight 1), and stratifies each arm's seed jackknife by foundation
(seed k left out, the rest of its foundation weighted up to keep the foundation's share),
so that V_a is the spread of runs within a foundation, and a common effect, which
cancels, is not taken for seed variance. Then

  V_F     = (F-1)/F sum_f (theta_(f) - mean_f theta_(f))^2 over the foundations the arms
            read stand on: all the variation between foundations, the runs' own (their
            offsets and item noise) included;
  V_found = max(0, V_F - sum_a V_a): what the foundations spread beyond what their runs
            predict (the one-way random-effects moment estimator, as DerSimonian-Laird's;
            0 where foundations agree as well as runs do);
  interval theta +- t_{0.975, df} sqrt(V_item + sum_a V_a + V_found), V_found entering
            Welch-Satterthwaite with F - 1 df (each V_a with n_a minus its strata).

Why not V_F alone (the textbook cluster jackknife): it has F - 1 df, 1 at F = 2, where
t_{0.975} is 12.7, and an interval from one squared contrast is as often far too narrow
as far too wide whether foundations matter or not; the max keeps every interval at least
as wide as the within-foundation one. Why not V_F + sum_a V_a: that counts the runs'
variance twice. Why not take V_found's df as V_F's whenever V_F > sum_a V_a (the exact
Satterthwaite for the max): the df, and the interval about 5x, would jump where V_F
crosses the within part, so verdicts flip on a hair; it covers 1-4 points more at large
interactions but is 1.7x as wide on average when foundations do not matter (differences,
F = 2).

Measured on synthetic studies (tests/study/test_stats.py, 500 per setting; the table is
in docs/study.md, "Seeds, arms, intervals"): differences are covered 98.2-99.6% of the
time with no foundation effect or a common one, 85-91% with an arm x foundation
interaction of sd 0.1; with no effect the intervals are 1.32x (F = 2) and 1.16x (F = 3)
as wide as the one without labels, as V_F exceeds the within part by chance in 32-41%.

The caveat, with 2 foundations: V_F is one squared contrast, chi^2 with 1 df. In about one
study in five here with a large interaction the two foundations happen to agree, V_F falls
below the within part, the interval is the within-foundation one, and it mostly misses. No
interval that stays near the old width when foundations do not matter avoids that, and
none measured reaches 95% there: this one 0.85-0.91, the cluster jackknife alone or the
exact df 0.86-0.90 (at 1.6-1.7x the width with no effect). Three foundations bring it to
0.90-0.92; only more make a foundation-sized effect's interval honest. `claim` returns
foundations (the number its interval spans) so that callers can say so. Where an arm
read stands on one foundation only, the foundation jackknife is undefined (it has no run
left where that foundation is left out): the interval carries the within-foundation part
only, and foundations is 1.

A claim is "statistic > 0". Its verdict from the interval [lo, hi]: supported
when lo > 0, contradicted when hi < 0, unclear otherwise. Claims of "no better"
or "matches" are written as contrasts with the effect they are set against
(e.g. "the shuffled replay's gain over offline is less than half of online's"
is online + offline - 2 * shuffled > 0), so no fixed margin enters.

A peak is the maximum of the mean curve; the maximum of noisy points is biased
upwards, and the interval of a maximum is approximate (the jackknife treats it
as smooth, right when the peak is clear); both are the usual price of reporting
peaks (the paper does) and are stated in the report.
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Callable, Mapping, Sequence

import numpy as np

Z95 = 1.959963984540054
METHOD = ("t intervals with Welch-Satterthwaite degrees of freedom: the variance over "
          "resampled win-rate prompts and held-out pairs plus a delete-one-seed jackknife "
          "over each arm's seeds")


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
  golden tied); score [S, J, P] the golden judge's score of the policy's sample per
  prompt (what Gao et al.'s laws are fitted to, `alignment.laws`); any of the per-item
  arrays may be None when not measured.
  foundations [S]: an integer label per run, the foundation draw (SFT policy, preference
  data, proxy PM) it stands on; None: every run on one foundation.
  """
  steps: np.ndarray
  kl: np.ndarray
  win: np.ndarray
  classifier: np.ndarray | None = None
  chosen: np.ndarray | None = None
  agreement: np.ndarray | None = None
  foundations: np.ndarray | None = None
  score: np.ndarray | None = None

  def __post_init__(self):
    if self.foundations is None:
      return
    f = np.asarray(self.foundations)
    if f.shape != (self.seeds,):
      raise ValueError(f"foundations must hold one label per run: shape ({self.seeds},) for "
                       f"{self.seeds} runs, got shape {f.shape}")
    if not np.issubdtype(f.dtype, np.integer):
      raise ValueError(f"foundations must be integer labels, got dtype {f.dtype}")
    self.foundations = f

  @property
  def seeds(self) -> int:
    return self.kl.shape[0]


@dataclasses.dataclass
class Curves:
  """An arm's mean curves for every column of the replicate axis: [C, J] each.

  C = 1 + resamples + (total seeds over all arms) + (F foundations where F >= 2); see
  `Bootstrap` for the layout."""
  steps: np.ndarray
  kl: np.ndarray
  win: np.ndarray
  classifier: np.ndarray | None
  chosen: np.ndarray | None
  agreement: np.ndarray | None
  score: np.ndarray | None = None


def _weighted_mean(values_sjx: np.ndarray, seed_w_rs: np.ndarray,
                   item_w_rx: np.ndarray | None) -> np.ndarray:
  """[R, J]: sum_s sum_x w_s w_x v[s, j, x] / sum(w_s w_x [v not NaN]); NaN where
  every weight is 0 (a one-seed arm without its seed)."""
  v = np.nan_to_num(values_sjx, nan=0.0)
  present = (~np.isnan(values_sjx)).astype(np.float64)
  if item_w_rx is None:
    item_w_rx = np.ones((seed_w_rs.shape[0], values_sjx.shape[2]))
  num = np.einsum("rs,sjx,rx->rj", seed_w_rs, v, item_w_rx, optimize=True)
  den = np.einsum("rs,sjx,rx->rj", seed_w_rs, present, item_w_rx, optimize=True)
  with np.errstate(invalid="ignore", divide="ignore"):
    return num / den


def t_quantile(q: float, df: float) -> float:
  """Student t quantile (scipy.special.stdtrit; scipy comes with jax)."""
  from scipy import special  # pylint: disable=g-import-not-at-top
  return float(special.stdtrit(df, q))


def t_sf(x: float, df: float) -> float:
  """P(T_df > x)."""
  from scipy import special  # pylint: disable=g-import-not-at-top
  return float(special.stdtr(df, -x))


DF_CAP = 1000.0  # beyond this t_{0.975} is 1.962: the normal's, to 3 decimals


class Bootstrap:
  """Item resamples shared by every arm, each arm's delete-one-seed jackknife and, where
  the runs stand on several foundations, a delete-one-foundation jackknife.

  arms: {name: ArmData}; prompts P and pairs Q must be the same count in every
  arm (the same fixed sets). `curves(name)` gives an arm's mean curves for every
  column of the replicate axis:

    0                  the data (every weight 1);
    1 .. R             prompts and pairs resampled (R = resamples, the same draws
                       for every arm), every seed at weight 1;
    then, per arm (sorted by name), a block of that arm's n_a seeds: column k
                       leaves seed k of that arm out (items at weight 1); in the
                       other arms' blocks this arm's curve is its data (column 0);
    then, only where the arms' runs carry F >= 2 distinct foundation labels (the
                       union over arms), a block of F columns (labels sorted): column
                       f leaves every run on foundation f out, in every arm at once
                       (items at weight 1); NaN for an arm with no run left.

  With a foundation block an arm's seed block is stratified by foundation: leaving
  seed k out, the arm's other runs on k's foundation are weighted up (n_f / (n_f - 1))
  so that every foundation keeps its share of the arm's mean, and V_a measures the
  spread of runs within a foundation only (see `variance`). Runs alone on their
  foundation within an arm are pooled into one stratum (collapsed strata); a single such
  run has nothing to stand in for it, and its column is NaN (the arm counts as one seed).

  `claim(fn)` evaluates fn(curves) -> [C] once and returns its estimate, 95%
  interval, verdict, standard error, degrees of freedom, two-sided p-value, the
  fewest seeds among the arms it reads, and the foundations its interval spans.
  """

  def __init__(self, arms: Mapping[str, ArmData], resamples: int = 2000, seed: int = 0):
    self.arms = dict(sorted(arms.items()))
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
    # The item part's degrees of freedom: the smaller item set (prompts, or pairs).
    self.items = min(n for n in (p, q) if n) if (p or q) else 0
    labels = sorted({int(x) for a in self.arms.values() if a.foundations is not None
                     for x in a.foundations})
    # One label (or none) is one foundation: no block, every column as without labels.
    self.foundations: list[int] = labels if len(labels) >= 2 else []
    bare = [n for n, a in self.arms.items() if a.foundations is None]
    if self.foundations and bare:
      raise ValueError(f"arms {bare} carry no foundation labels while others' runs span "
                       f"foundations {labels}: label every arm's runs")
    self.blocks: dict[str, slice] = {}
    start = 1 + resamples
    for name, a in self.arms.items():
      self.blocks[name] = slice(start, start + a.seeds)
      start += a.seeds
    self.foundation_block = slice(start, start + len(self.foundations))
    start += len(self.foundations)
    self.columns = start
    self._curves: dict[str, Curves] = {}

  def _strata(self, name: str) -> np.ndarray:
    """[S]: the arm's jackknife stratum per run: its foundation label where the arm has
    two or more runs there; one pooled stratum (-1) for runs alone on their foundation."""
    f = self.arms[name].foundations
    labels, counts = np.unique(f, return_counts=True)
    alone = set(labels[counts < 2].tolist())
    return np.array([-1 if x in alone else int(x) for x in f])

  def _drop_one(self, name: str) -> np.ndarray:
    """[S, S] seed weights of the arm's delete-one columns: 1 - I without a foundation
    block; with one, seed k at 0 and the rest of its stratum at m / (m - 1) (m runs in
    the stratum), so every stratum keeps its share; NaN where nothing is left (0s)."""
    s = self.arms[name].seeds
    drop = 1.0 - np.eye(s)  # a one-seed arm: no seed left, its row is NaN
    if not self.foundations:
      return drop
    strata = self._strata(name)
    for k in range(s):
      same = strata == strata[k]
      m = int(same.sum())
      if m > 1:
        drop[k, same] = m / (m - 1)
        drop[k, k] = 0.0
      else:
        drop[k] = 0.0
    return drop

  def _columns(self, name: str, base_rj: np.ndarray, own_sj: np.ndarray,
               found_fj: np.ndarray | None = None) -> np.ndarray:
    """[C, J] from an arm's data-and-item rows [1 + R, J], its delete-one rows [n, J] and
    its delete-one-foundation rows [F, J]: its own block gets the delete-one rows, every
    other arm's block copies of the data row, the foundation block its rows."""
    out = np.empty((self.columns, base_rj.shape[1]))
    out[:base_rj.shape[0]] = base_rj
    for other, sl in self.blocks.items():
      out[sl] = own_sj if other == name else base_rj[0]
    if found_fj is not None:
      out[self.foundation_block] = found_fj
    return out

  def curves(self, name: str) -> Curves:
    if name not in self._curves:
      a = self.arms[name]
      all_seeds = np.ones((1 + self.resamples, a.seeds))
      drop_one = self._drop_one(name)
      # [F, S]: every run on foundation f at weight 0 (no run left: NaN).
      drop_f = (None if not self.foundations else
                np.array([[0.0 if x == f else 1.0 for x in a.foundations]
                          for f in self.foundations]))

      def per_item(x, w):
        if x is None:
          return None
        # Items may be a prefix of the shared set (e.g. the proxy's first N prompts).
        w = None if w is None else w[:, :x.shape[2]]
        return self._columns(name, _weighted_mean(x, all_seeds, w),
                             _weighted_mean(x, drop_one, None),
                             None if drop_f is None else _weighted_mean(x, drop_f, None))

      with np.errstate(invalid="ignore", divide="ignore"):
        kl_own = drop_one @ a.kl / drop_one.sum(1, keepdims=True)
        kl_f = None if drop_f is None else drop_f @ a.kl / drop_f.sum(1, keepdims=True)
      kl_base = np.broadcast_to(a.kl.mean(0), (1 + self.resamples, a.kl.shape[1]))
      self._curves[name] = Curves(
          steps=a.steps, kl=self._columns(name, kl_base, kl_own, kl_f),
          win=per_item(a.win, self.prompt_w), classifier=per_item(a.classifier, self.pair_w),
          chosen=per_item(a.chosen, self.pair_w), agreement=per_item(a.agreement, self.prompt_w),
          score=per_item(a.score, self.prompt_w))
    return self._curves[name]

  def seed_df(self, name: str) -> int:
    """Degrees of freedom of an arm's jackknife variance: n - 1, or with a foundation
    block n minus its number of strata (the within-foundation degrees of freedom)."""
    n = self.arms[name].seeds
    if not self.foundations:
      return n - 1
    return max(1, n - len(np.unique(self._strata(name))))

  def variance(self, values: np.ndarray) -> dict:
    """The parts of a statistic's variance, from its values on every column [C, ...]
    (elementwise over any trailing axes):

    item: variance (ddof 1) over the item resamples (non-finite ones left out);
    arms: {arm: jackknife variance (n-1)/n sum_k (theta_k - mean theta)^2}, 0 where
          the arm has one seed or a non-finite delete-one value; with a foundation
          block the stratified one, sum over strata (m-1)/m sum_k (theta_k - mean of
          the stratum's theta_k)^2: the spread of runs within a foundation;
    read: {arm: whether the statistic reads it (a delete-one value differs from the
          estimate, NaN included)};
    usable: {arm: whether its jackknife variance is defined (n >= 2, all finite)};
    finite: the share of finite item resamples;
    foundations: the number of foundations the interval spans: the distinct labels
          among the runs of the arms read where the foundation jackknife is defined
          (every one of those columns finite), else 1;
    foundation_jackknife: V_F = (F-1)/F sum_f (theta_(f) - mean_f theta_(f))^2 over
          those F columns (0 where foundations is 1);
    foundation: the part it adds, max(0, V_F - sum_a V_a) (see the module docstring)."""
    values = np.asarray(values, np.float64)
    theta, items = values[0], values[1:1 + self.resamples]
    ok = np.isfinite(items)
    count = ok.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
      mean = np.where(ok, items, 0.0).sum(0) / count
      item = np.where(ok, (items - mean) ** 2, 0.0).sum(0) / (count - 1)
    item = np.where(count >= 2, item, 0.0)
    arms, read, usable = {}, {}, {}
    for name, sl in self.blocks.items():
      jack, n = values[sl], self.arms[name].seeds
      read[name] = np.any(jack != theta, axis=0)
      usable[name] = np.all(np.isfinite(jack), axis=0) & (n >= 2)
      with np.errstate(invalid="ignore"):
        if not self.foundations:
          v = (n - 1) / n * np.sum((jack - jack.mean(0)) ** 2, axis=0)
        else:
          strata = self._strata(name)
          v = sum((m - 1) / m * np.sum((jack[strata == s] - jack[strata == s].mean(0)) ** 2, 0)
                  for s, m in zip(*np.unique(strata, return_counts=True)))
      arms[name] = np.where(usable[name], v, 0.0)
    out = {"item": item, "arms": arms, "read": read, "usable": usable,
           "finite": count / max(self.resamples, 1)}
    out.update(self._foundation_parts(values, theta, read, sum(arms.values())))
    return out

  def _foundation_parts(self, values, theta, read, within) -> dict:
    """variance()'s foundation keys; elementwise like the rest."""
    zero = np.zeros(np.shape(theta))
    if not self.foundations:
      return {"foundations": np.ones(np.shape(theta), int), "foundation_jackknife": zero,
              "foundation": zero}
    jack = values[self.foundation_block]  # [F, ...]
    # Which foundations the statistic stands on: those of the runs of the arms it reads.
    on = np.zeros(jack.shape, bool)
    for name, a in self.arms.items():
      own = set(a.foundations.tolist())
      has = np.array([f in own for f in self.foundations])
      on |= has.reshape((-1,) + (1,) * (jack.ndim - 1)) & read[name]
    f = on.sum(0)
    defined = (f >= 2) & np.all(np.isfinite(jack) | ~on, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
      mean = np.where(on, jack, 0.0).sum(0) / f
      v_f = (f - 1) / f * np.where(on, (jack - mean) ** 2, 0.0).sum(0)
    v_f = np.where(defined, v_f, 0.0)
    return {"foundations": np.where(defined, f, 1), "foundation_jackknife": v_f,
            "foundation": np.maximum(v_f - within, 0.0)}

  def se(self, values: np.ndarray) -> np.ndarray:
    """Standard error of a statistic from its values on every column: [C, ...] -> [...]
    (e.g. a curve's pointwise error bars); NaN where the estimate is not finite."""
    parts = self.variance(values)
    total = parts["item"] + sum(parts["arms"].values())
    if self.foundations:
      total = total + parts["foundation"]
    return np.where(np.isfinite(np.asarray(values, np.float64)[0]), np.sqrt(total), np.nan)

  def claim(self, statistic: Callable[[Callable[[str], Curves]], np.ndarray]) -> dict:
    """statistic(curves) -> [C]; its estimate (column 0) and 95% interval
    theta +- t_{0.975, df} sqrt(V_item + sum_a V_a + V_found), df by Welch-Satterthwaite
    (V_found = max(0, V_F - sum_a V_a) with F - 1 degrees of freedom; 0 without
    foundations).

    Returns {estimate, interval [lo, hi], verdict (of "statistic > 0"), se, df,
    p (two-sided, of "statistic != 0"), min_seeds (the fewest seeds among the arms
    the statistic reads; an arm whose jackknife variance is undefined counts as 1:
    its seed variance is missing from the interval), foundations (the number of distinct
    foundation labels among the runs of the arms it reads; 1 without labels, and 1
    where the foundation jackknife is undefined, an arm read standing on one foundation
    only: the foundation variance is missing from the interval)}."""
    values = np.asarray(statistic(self.curves), np.float64)
    parts = self.variance(values)
    read = [name for name in self.blocks if parts["read"][name]]
    seeds = [self.arms[n].seeds if parts["usable"][n] else 1 for n in read]
    min_seeds = min(seeds) if seeds else min((a.seeds for a in self.arms.values()), default=0)
    foundations = int(parts["foundations"])
    theta = float(values[0])
    if not math.isfinite(theta) or (self.resamples and parts["finite"] < 0.9):
      return {"estimate": None, "interval": [None, None], "verdict": "unclear", "se": None,
              "df": None, "p": None, "min_seeds": int(min_seeds), "foundations": foundations}
    v_item = float(parts["item"])
    v_arms = {n: float(parts["arms"][n]) for n in self.blocks}
    total = v_item + sum(v_arms.values())
    den = sum(v * v / self.seed_df(n) for n, v in v_arms.items() if v > 0)
    v_found = float(parts["foundation"])
    if v_found > 0:
      total += v_found
      den += v_found * v_found / (foundations - 1)
    if v_item > 0 and self.items > 1:
      den += v_item * v_item / (self.items - 1)
    df = min(DF_CAP, total * total / den) if den > 0 else DF_CAP
    se = math.sqrt(total)
    half = t_quantile(0.975, df) * se
    lo, hi = theta - half, theta + half
    if se > 0:
      p = min(1.0, 2.0 * t_sf(abs(theta) / se, df))
    else:
      p = 1.0 if theta == 0 else 0.0
    return {"estimate": theta, "interval": [lo, hi], "verdict": verdict(lo, hi), "se": se,
            "df": df, "p": p, "min_seeds": int(min_seeds), "foundations": foundations}


def holm(ps: Sequence[float], alpha: float = 0.05) -> list[bool]:
  """Holm-Bonferroni step-down: which of the hypotheses are rejected at family-wise
  level alpha. Sorted p_(1) <= ... <= p_(m); reject while p_(i) <= alpha / (m - i + 1),
  stop at the first that is not. A None or NaN p is never rejected (counts in m)."""
  adjusted = holm_adjusted(ps)
  return [a <= alpha for a in adjusted]


def holm_adjusted(ps: Sequence[float]) -> list[float]:
  """Holm-adjusted p-values, in the input order: the running maximum over the sorted
  p-values of (m - i + 1) p_(i), capped at 1 (reject where adjusted <= alpha)."""
  clean = [1.0 if p is None or not math.isfinite(p) else float(p) for p in ps]
  m = len(clean)
  order = sorted(range(m), key=lambda i: clean[i])
  out, running = [1.0] * m, 0.0
  for rank, i in enumerate(order):
    running = max(running, min(1.0, (m - rank) * clean[i]))
    out[i] = running
  return out


# ---------------------------------------------------------------------------
# Statistics of curves ([R, J] -> [R])
# ---------------------------------------------------------------------------


def peak(win_rj: np.ndarray) -> np.ndarray:
  """The highest point of each replicate's mean curve (NaN for an all-NaN column: a
  one-seed arm with its seed left out)."""
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
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
  with warnings.catch_warnings():  # all-NaN columns (a one-seed arm left out) give NaN
    warnings.simplefilter("ignore", RuntimeWarning)
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
