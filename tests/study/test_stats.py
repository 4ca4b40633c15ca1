"""Interval helpers against distributions whose answer is known (coverage), and the
curve statistics against hand-worked cases.

The claim's coverage is measured on synthetic studies in which each run has its own
offset (a seed shifts its whole curve), as real runs do; the earlier tests drew every
run of an arm around the same curve, where a percentile bootstrap over 3 seeds looks
right, so they could not see that it under-covers once runs differ. Run with -s to
see the measured coverages."""
import functools

import numpy as np
import pytest

from alignment import stats


def test_wilson_covers_the_true_proportion_95_percent_of_the_time():
  rng = np.random.default_rng(0)
  for p, n in ((0.3, 150), (0.72, 400), (0.5, 60)):
    k = rng.binomial(n, p, size=4000)
    covered = np.mean([lo <= p <= hi for lo, hi in (stats.wilson(x, n) for x in k)])
    assert 0.93 <= covered <= 0.97, (p, n, covered)


def test_wilson_and_mean_se_by_hand():
  lo, hi = stats.wilson(70, 100)
  assert lo == pytest.approx(0.6041, abs=1e-3) and hi == pytest.approx(0.7810, abs=1e-3)
  m, se = stats.mean_se([1.0, 2.0, 3.0, np.nan])
  assert m == 2.0 and se == pytest.approx(1.0 / np.sqrt(3))


def test_t_distribution_against_table_values():
  for df, q in ((1, 12.706), (2, 4.303), (4, 2.776), (10, 2.228), (30, 2.042), (1000, 1.962)):
    assert stats.t_quantile(0.975, df) == pytest.approx(q, abs=1e-3)
  assert stats.t_sf(2.228, 10) == pytest.approx(0.025, abs=1e-4)
  assert stats.t_sf(0.0, 3) == pytest.approx(0.5)


def test_holm_by_hand():
  # Sorted: 0.01 <= 0.05/4 rejected; 0.03 > 0.05/3 stops: nothing after is rejected,
  # 0.04 and 0.2 included although 0.04 <= 0.05/2.
  ps = [0.01, 0.04, 0.03, 0.2]
  assert stats.holm(ps, alpha=0.05) == [True, False, False, False]
  # Adjusted: 4 x 0.01, 3 x 0.03, max(0.09, 2 x 0.04), max(0.09, 0.2).
  np.testing.assert_allclose(stats.holm_adjusted(ps), [0.04, 0.09, 0.09, 0.2])
  assert stats.holm([0.001, 0.02, 0.04], alpha=0.05) == [True, True, True]
  assert stats.holm_adjusted([0.5, 0.6]) == [1.0, 1.0]  # capped at 1
  assert stats.holm([float("nan"), 0.001]) == [False, True]
  assert stats.holm([]) == []


# ---------------------------------------------------------------------------
# The claim's interval, by hand
# ---------------------------------------------------------------------------


def _flat_arm(run_values, prompts=1):
  """One evaluation, every prompt of run s at run_values[s]: no item variance."""
  v = np.asarray(run_values, float)
  return stats.ArmData(np.array([0]), np.zeros((v.size, 1)),
                       np.repeat(v[:, None, None], prompts, axis=2))


def test_claim_by_hand_three_runs_no_item_variance():
  # Runs 1, 2, 3: delete-one means 2.5, 2, 1.5; V = 2/3 (0.25 + 0 + 0.25) = 1/3 = s^2/n;
  # one part with n - 1 = 2 degrees of freedom.
  boot = stats.Bootstrap({"x": _flat_arm([1.0, 2.0, 3.0]), "y": _flat_arm([0.5])}, resamples=20)
  c = boot.claim(lambda cv: cv("x").win[:, 0])
  assert c["estimate"] == 2.0 and c["se"] == pytest.approx(np.sqrt(1 / 3))
  assert c["df"] == pytest.approx(2.0)
  half = 4.302653 * np.sqrt(1 / 3)
  np.testing.assert_allclose(c["interval"], [2 - half, 2 + half], rtol=1e-6)
  assert c["p"] == pytest.approx(0.07418, abs=1e-5) and c["verdict"] == "unclear"
  assert c["min_seeds"] == 3
  # Reading the one-seed arm y: it has no seed variance (its delete-one column is NaN);
  # the interval is the rest's, and min_seeds says why it cannot be voted.
  d = boot.claim(lambda cv: cv("x").win[:, 0] - cv("y").win[:, 0])
  assert d["min_seeds"] == 1 and d["estimate"] == 1.5
  assert d["se"] == pytest.approx(c["se"]) and d["df"] == pytest.approx(2.0)
  e = boot.claim(lambda cv: cv("y").win[:, 0])
  assert e["min_seeds"] == 1 and e["se"] == 0.0 and e["p"] == 0.0


def test_welch_satterthwaite_df_of_two_arms():
  # Two 3-seed arms with V_a = 1/3 (runs 1, 2, 3) and V_b = 4/3 (runs 0, 2, 4):
  # df = (5/3)^2 / ((1/3)^2 / 2 + (4/3)^2 / 2) = 50/17.
  boot = stats.Bootstrap({"a": _flat_arm([1.0, 2.0, 3.0]), "b": _flat_arm([0.0, 2.0, 4.0])},
                         resamples=20)
  c = boot.claim(lambda cv: cv("a").win[:, 0] - cv("b").win[:, 0])
  assert c["se"] == pytest.approx(np.sqrt(5 / 3)) and c["df"] == pytest.approx(50 / 17)
  assert c["min_seeds"] == 3


def test_an_arm_not_read_leaves_the_interval_alone():
  rng = np.random.default_rng(4)
  make = lambda seeds: stats.ArmData(np.arange(2), np.zeros((seeds, 2)),
                                     rng.random((seeds, 2, 40)))
  a, b, c, d = make(3), make(3), make(1), make(2)
  stat = lambda cv: cv("a").win[:, -1] - cv("b").win[:, -1]
  alone = stats.Bootstrap({"a": a, "b": b}, resamples=100, seed=5).claim(stat)
  boot = stats.Bootstrap({"a": a, "b": b, "c": c, "d": d}, resamples=100, seed=5)
  more = boot.claim(stat)
  assert more == alone and more["min_seeds"] == 3 and more["interval"][0] is not None
  assert boot.claim(lambda cv: cv("a").win[:, 0] - cv("c").win[:, 0])["min_seeds"] == 1
  assert boot.claim(lambda cv: cv("a").win[:, 0] - cv("d").win[:, 0])["min_seeds"] == 2
  # np.max over arms propagates the one-seed arm's NaN: read, even where it is not the max.
  pooled = boot.claim(
      lambda cv: np.max(np.stack([cv("a").win[:, 0], cv("c").win[:, 0] - 9]), axis=0))
  assert pooled["min_seeds"] == 1
  not_finite = boot.claim(lambda cv: cv("a").win[:, 0] * np.nan)
  assert not_finite["estimate"] is None and not_finite["verdict"] == "unclear"


def test_columns_data_items_then_delete_one_seed_blocks():
  rng = np.random.default_rng(3)
  win = rng.random((2, 3, 50))
  arm = stats.ArmData(np.arange(3), rng.random((2, 3)), win,
                      classifier=rng.integers(0, 2, (2, 3, 20)).astype(float))
  other = stats.ArmData(np.arange(3), rng.random((3, 3)), rng.random((3, 3, 50)))
  boot = stats.Bootstrap({"x": arm, "w": other}, resamples=10)
  cv = boot.curves("x")
  assert cv.win.shape == (1 + 10 + 3 + 2, 3)  # data, 10 resamples, w's 3 seeds, x's 2
  np.testing.assert_allclose(cv.win[0], win.mean(axis=(0, 2)))
  np.testing.assert_allclose(cv.kl[0], arm.kl.mean(0))
  np.testing.assert_allclose(cv.classifier[0], arm.classifier.mean(axis=(0, 2)))
  assert boot.blocks == {"w": slice(11, 14), "x": slice(14, 16)}
  np.testing.assert_allclose(cv.win[14], win[1].mean(1))  # seed 0 left out
  np.testing.assert_allclose(cv.win[15], win[0].mean(1))
  np.testing.assert_allclose(cv.kl[14], arm.kl[1])
  assert np.all(cv.win[11:14] == cv.win[0]) and np.all(cv.kl[1:14] == cv.kl[0])
  assert np.all(boot.se(cv.win) > 0) and boot.se(cv.win).shape == (3,)


def test_nan_items_are_left_out_of_means():
  agreement = np.array([[[1.0, np.nan, 0.0, 1.0]]])
  arm = stats.ArmData(np.array([0]), np.zeros((1, 1)), np.zeros((1, 1, 4)), agreement=agreement)
  cv = stats.Bootstrap({"x": arm}, resamples=5).curves("x")
  assert cv.agreement[0, 0] == pytest.approx(2 / 3)
  assert np.isnan(cv.agreement[-1, 0])  # the one seed left out: nothing left


# ---------------------------------------------------------------------------
# Coverage on synthetic studies with per-run offsets
# ---------------------------------------------------------------------------
#
# win[s, j, p] = curve_arm[j] + offset_s + prompt_effect[p] + noise[s, j, p]:
# offset_s ~ N(0, tau^2), one per run, shifting its whole curve (what a seed does:
# a run that got ahead stays ahead); the prompt effect (sd 0.2) is shared by every
# run of every arm (the same eval prompts); noise sd 0.25 per item. Two arms of
# 3 seeds, P = 128 prompts: the noise of one run's mean at a point is
# 0.25 / sqrt(128) = 0.022, of an arm's mean 0.0128.

CURVE_A = np.array([0.50, 0.58, 0.70, 0.60, 0.52])
CURVE_B = np.array([0.50, 0.56, 0.64, 0.55, 0.48])
KL = np.array([0.0, 1.0, 2.0, 4.0, 8.0])
PROMPTS, NOISE, PROMPT_SD = 128, 0.25, 0.2
TAUS = {"noise only": 0.0, "tau ~ arm-mean noise": 0.015, "tau dominating": 0.1}
STUDIES, RESAMPLES = 500, 200


def _truth_gap():
  cv = lambda c: stats.Curves(np.arange(5), KL[None], c[None], None, None, None)
  return float(stats.envelope_gap(cv(CURVE_A), cv(CURVE_B))[0])


STATISTICS = {  # name: (statistic, truth)
    "final a - final b": (lambda cv: cv("a").win[:, -1] - cv("b").win[:, -1], 0.04),
    "peak a - peak b": (lambda cv: stats.peak(cv("a").win) - stats.peak(cv("b").win), 0.06),
    "envelope_gap(a, b)": (lambda cv: stats.envelope_gap(cv("a"), cv("b")), _truth_gap()),
    "peak a": (lambda cv: stats.peak(cv("a").win), 0.70),  # the prompt effect enters
}


def _study(rng, tau, seeds=3):
  prompt_effect = PROMPT_SD * rng.standard_normal(PROMPTS)

  def arm(curve):
    offset = tau * rng.standard_normal((seeds, 1, 1))
    win = (curve[None, :, None] + offset + prompt_effect[None, None, :] +
           NOISE * rng.standard_normal((seeds, curve.size, PROMPTS)))
    return stats.ArmData(np.arange(curve.size), np.tile(KL, (seeds, 1)), win)

  return {"a": arm(CURVE_A), "b": arm(CURVE_B)}


def _old_percentile_final_difference(arms, rng, resamples=RESAMPLES):
  """The method this replaced: per-arm multinomial resampling of seeds, prompts
  resampled jointly for both arms, percentile interval of final a - final b."""
  prompt_w = rng.multinomial(PROMPTS, np.full(PROMPTS, 1 / PROMPTS), resamples)
  mean = {}
  for name, a in arms.items():
    s = a.seeds
    seed_w = rng.multinomial(s, np.full(s, 1 / s), resamples)
    mean[name] = np.einsum("rs,sx,rx->r", seed_w, a.win[:, -1], prompt_w) / (s * PROMPTS)
  return np.percentile(mean["a"] - mean["b"], [2.5, 97.5])


@functools.lru_cache(maxsize=None)
def _coverage(setting, seeds=3, studies=STUDIES):
  """Share of studies whose 95% interval covers the truth, per statistic; the old
  method's for the final difference (as "old: final a - final b")."""
  rng = np.random.default_rng(sorted(TAUS).index(setting) + 10 * seeds)
  hits = {name: 0 for name in STATISTICS}
  if seeds > 1:
    hits["old: final a - final b"] = 0
  for t in range(studies):
    arms = _study(rng, TAUS[setting], seeds)
    boot = stats.Bootstrap(arms, resamples=RESAMPLES, seed=t)
    for name, (fn, truth) in STATISTICS.items():
      c = boot.claim(fn)
      hits[name] += c["interval"][0] <= truth <= c["interval"][1]
      assert c["min_seeds"] == seeds
    if seeds > 1:
      lo, hi = _old_percentile_final_difference(arms, rng)
      hits["old: final a - final b"] += lo <= 0.04 <= hi
  out = {name: h / studies for name, h in hits.items()}
  print(f"\ncoverage, {setting} (tau {TAUS[setting]}), {seeds} seeds per arm, "
        f"{studies} studies: " + ", ".join(f"{k} {v:.3f}" for k, v in out.items()))
  return out


@pytest.mark.parametrize("setting", list(TAUS))
def test_coverage_with_per_run_offsets(setting):
  cov = _coverage(setting)
  # The difference of means: near 95%, above it when runs differ little (the within-run
  # noise is counted in both the seed and the item part).
  assert 0.93 <= cov["final a - final b"] <= 0.995, cov
  for name in ("peak a - peak b", "envelope_gap(a, b)"):
    assert 0.93 <= cov[name] <= 0.998, (name, cov)
  # One arm's peak: the prompt effect does not cancel, so the item part is a sizeable
  # share of the variance next to a 2-df seed part. Satterthwaite's df is estimated from
  # the same data: when the seed part comes out small by chance the df rises just where
  # the interval is already too narrow, so the single arm falls a little short where
  # offsets dominate (0.918 at tau 0.1; 0.92 in 2000 studies, 0.938 at tau 0.3).
  assert 0.90 <= cov["peak a"] <= 0.998, cov


def test_old_percentile_method_under_covers_with_offsets():
  """Three seeds give 10 distinct seed resamples, a variance (n-1)/n too small and a
  normal quantile where t with 2 df belongs: once runs differ by more than their
  noise the percentile interval misses the truth far more than 5% of the time."""
  old = _coverage("tau dominating")["old: final a - final b"]
  new = _coverage("tau dominating")["final a - final b"]
  assert old <= 0.90 and new - old >= 0.05, (old, new)


def test_one_seed_arms_cover_only_without_offsets():
  """With one seed per arm the interval has no seed part: right when runs do not
  differ (tau 0), too narrow when they do; min_seeds 1 says so, and callers do not
  vote such claims."""
  none = _coverage("noise only", seeds=1, studies=300)["final a - final b"]
  big = _coverage("tau dominating", seeds=1, studies=300)["final a - final b"]
  assert 0.92 <= none <= 0.98 and big < 0.7, (none, big)


# ---------------------------------------------------------------------------
# Curve statistics by hand
# ---------------------------------------------------------------------------


def test_envelope_and_gap_by_hand():
  kl = np.array([[0.0, 1.0, 2.0, 4.0]])
  win = np.array([[0.50, 0.60, 0.55, 0.40]])
  env = stats.envelope(kl, win, np.array([0.0, 0.5, 1.0, 3.0, 5.0]))
  np.testing.assert_allclose(env, [[0.50, 0.50, 0.60, 0.60, 0.60]])
  a = stats.Curves(np.arange(4), kl, win, None, None, None)
  b = stats.Curves(np.arange(3), np.array([[0.0, 2.0, 8.0]]), np.array([[0.50, 0.52, 0.70]]),
                   None, None, None)
  # Common range [0, 4]: a's envelope is 0.5 on [0, 1), 0.6 after; b's 0.5 on [0, 2), 0.52 after.
  gap = stats.envelope_gap(a, b, points=4001)[0]
  expected = (0.0 * 1 + 0.1 * 1 + 0.08 * 2) / 4
  assert gap == pytest.approx(expected, abs=2e-3)
  # A sweep pools into one envelope: the best curve at each KL.
  low = stats.Curves(np.arange(4), kl, win - 0.2, None, None, None)
  assert stats.envelope_gap([a, low], b, points=4001)[0] == pytest.approx(gap)
  assert stats.envelope_gap([low, a], [b, b], points=4001)[0] == pytest.approx(gap)


def test_verdicts_and_their_combination():
  assert stats.verdict(0.01, 0.2) == "supported"
  assert stats.verdict(-0.2, -0.01) == "contradicted"
  assert stats.verdict(-0.1, 0.1) == "unclear"
  assert stats.combine(["supported", "supported"]) == "reproduced"
  assert stats.combine(["supported", "unclear"]) == "inconclusive"
  assert stats.combine(["supported", "contradicted", "unclear"]) == "not reproduced"
  assert stats.combine([]) == "inconclusive"
  assert stats.interval_str({"estimate": 0.06, "interval": [0.03, 0.09]}) == \
      "+0.060 [0.030, 0.090]"
