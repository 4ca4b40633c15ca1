"""Interval helpers against distributions whose answer is known (coverage), and the
curve statistics against hand-worked cases."""
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


def _arm(rng, means_j, seeds=3, prompts=200, noise=0.25):
  """Per-prompt win values around a known curve: a prompt effect shared by all runs
  (the same prompts) plus per-run noise."""
  return means_j[None, :, None] + noise * rng.standard_normal((seeds, len(means_j), prompts))


@pytest.mark.parametrize("seeds", [1, 3])
def test_bootstrap_difference_of_means_covers_the_truth(seeds):
  rng = np.random.default_rng(1)
  covered, trials = 0, 300
  for t in range(trials):
    prompt_effect = 0.2 * rng.standard_normal(200)
    a = _arm(rng, np.array([0.60]), seeds) + prompt_effect
    b = _arm(rng, np.array([0.55]), seeds) + prompt_effect
    kl = np.zeros((seeds, 1))
    boot = stats.Bootstrap({"a": stats.ArmData(np.array([0]), kl, a),
                            "b": stats.ArmData(np.array([0]), kl, b)}, resamples=400, seed=t)
    c = boot.claim(lambda cv: cv("a").win[:, 0] - cv("b").win[:, 0])
    covered += c["interval"][0] <= 0.05 <= c["interval"][1]
  assert 0.91 <= covered / trials <= 0.99, covered / trials


def test_bootstrap_peak_covers_a_clear_peak():
  rng = np.random.default_rng(2)
  curve = np.array([0.50, 0.58, 0.70, 0.60, 0.52])
  covered, trials = 0, 200
  for t in range(trials):
    arm = stats.ArmData(np.arange(5), np.tile(np.arange(5.0), (3, 1)), _arm(rng, curve))
    c = stats.Bootstrap({"x": arm}, resamples=400, seed=t).claim(
        lambda cv: stats.peak(cv("x").win))
    covered += c["interval"][0] <= 0.70 <= c["interval"][1]
  assert covered / trials >= 0.9, covered / trials


def test_replicate_zero_is_the_data_itself():
  rng = np.random.default_rng(3)
  win = rng.random((2, 3, 50))
  arm = stats.ArmData(np.arange(3), rng.random((2, 3)), win,
                      classifier=rng.integers(0, 2, (2, 3, 20)).astype(float))
  cv = stats.Bootstrap({"x": arm}, resamples=10).curves("x")
  np.testing.assert_allclose(cv.win[0], win.mean(axis=(0, 2)))
  np.testing.assert_allclose(cv.kl[0], arm.kl.mean(0))
  np.testing.assert_allclose(cv.classifier[0], arm.classifier.mean(axis=(0, 2)))
  assert cv.win.shape == (11, 3)


def test_nan_items_are_left_out_of_means():
  agreement = np.array([[[1.0, np.nan, 0.0, 1.0]]])
  arm = stats.ArmData(np.array([0]), np.zeros((1, 1)), np.zeros((1, 1, 4)), agreement=agreement)
  cv = stats.Bootstrap({"x": arm}, resamples=5).curves("x")
  assert cv.agreement[0, 0] == pytest.approx(2 / 3)


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
