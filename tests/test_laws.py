"""Gao et al.'s laws (alignment/laws.py) against answers known in advance: coefficients
that generated the curve, np.linalg.lstsq on the same design, a dense argmax of the fitted
curve, and a row-by-row loop. Pure numpy, well under a second."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from alignment import laws

D = np.linspace(0.0, 3.0, 16)  # includes the start, d = 0


def _design(form, d):
  x1, x2 = laws._regressors(form, d)  # pylint: disable=protected-access
  return np.stack([x1, x2], -1)


@pytest.mark.parametrize("form,alpha,beta", [("rl", 1.3, 0.45), ("rl", -0.2, 0.8),
                                             ("bon", 0.9, 0.15), ("bon", 0.4, -0.05)])
def test_noiseless_curves_give_back_their_coefficients(form, alpha, beta):
  r = laws.predict(form, alpha, beta, D)
  f = laws.fit(form, D, r)
  assert abs(f.alpha - alpha) < 1e-10 and abs(f.beta - beta) < 1e-10
  assert f.rmse < 1e-10 and abs(f.r2 - 1.0) < 1e-10
  assert f.n == 16 and f.n_positive == 15


@pytest.mark.parametrize("form,alpha,beta", [("rl", 1.0, 0.4), ("bon", 0.8, 0.12)])
def test_noisy_curves_unbiased_with_the_textbook_spread(form, alpha, beta):
  # OLS with a fixed design and zero-mean noise is unbiased, with covariance
  # sigma^2 (X'X)^-1. Over 2000 noisy copies (one vectorised call) the mean estimate must
  # lie within 3 standard errors of the truth (a 0.3% chance of failing per check if the
  # fit is right; the seed is fixed, so the test is deterministic), and the spread of the
  # estimates within 10% of the theoretical one (the sd of 2000 draws has a relative
  # standard error of 1/sqrt(2 * 2000) = 1.6%: 10% is about 6 of them).
  rng = np.random.default_rng(0)
  sigma, copies = 0.05, 2000
  r = laws.predict(form, alpha, beta, D) + sigma * rng.standard_normal((copies, D.size))
  r[:, 0] = 0.0  # the start is measured exactly: r = score - start is 0 there
  f = laws.fit(form, D, r)
  x = _design(form, D)
  sd = sigma * np.sqrt(np.diag(np.linalg.inv(x.T @ x)))
  for est, truth, s in ((f.alpha, alpha, sd[0]), (f.beta, beta, sd[1])):
    assert abs(est.mean() - truth) < 3 * est.std(ddof=1) / np.sqrt(copies)
    assert abs(est.std(ddof=1) / s - 1.0) < 0.1
  assert np.all(f.n == D.size)


def _rows_with_gaps(rng, rows=12):
  d = np.sort(rng.uniform(0.0, 4.0, (rows, 10)), -1)
  d[:, 0] = 0.0
  r = 0.9 * d - 0.2 * d * d + 0.1 * rng.standard_normal(d.shape)
  r[rng.random(r.shape) < 0.15] = np.nan
  d[rng.random(d.shape) < 0.1] = np.nan
  return d, r


@pytest.mark.parametrize("form", laws.FORMS)
@pytest.mark.parametrize("weighted", [False, True])
def test_closed_form_equals_lstsq_row_by_row_with_masked_points(form, weighted):
  rng = np.random.default_rng(1)
  d, r = _rows_with_gaps(rng)
  w = rng.uniform(0.2, 3.0, d.shape) if weighted else None
  f = laws.fit(form, d, r, weights=w)
  for i in range(d.shape[0]):
    use = np.isfinite(d[i]) & np.isfinite(r[i])
    wi = w[i][use] if weighted else np.ones(use.sum())
    x, y = _design(form, d[i][use]), r[i][use]
    coef, *_ = np.linalg.lstsq(x * np.sqrt(wi)[:, None], y * np.sqrt(wi), rcond=None)
    np.testing.assert_allclose([f.alpha[i], f.beta[i]], coef, rtol=1e-9, atol=1e-12)
    e = y - x @ coef
    mean = np.sum(wi * y) / wi.sum()
    assert f.rmse[i] == pytest.approx(np.sqrt(np.sum(wi * e * e) / wi.sum()), rel=1e-9)
    assert f.r2[i] == pytest.approx(1 - np.sum(wi * e * e) / np.sum(wi * (y - mean) ** 2),
                                    rel=1e-9)
    assert f.n[i] == use.sum()
  assert 0 < np.sum(np.isnan(r)) and np.all(np.isfinite(f.alpha))


@pytest.mark.parametrize("form", laws.FORMS)
def test_vectorised_equals_a_loop_over_rows(form):
  rng = np.random.default_rng(2)
  d, r = _rows_with_gaps(rng, rows=7)
  f = laws.fit(form, d, r)
  for i in range(7):
    g = laws.fit(form, d[i], r[i])
    for name in ("alpha", "beta", "rmse", "r2"):
      np.testing.assert_allclose(getattr(f, name)[i], getattr(g, name), rtol=1e-12)
  # Leading axes broadcast: one d grid for curves [C, J], and a 3-d stack.
  grid = np.linspace(0, 2, 9)
  rr = np.stack([laws.predict(form, 1.0 + 0.1 * c, 0.3, grid) for c in range(4)])
  g = laws.fit(form, grid, rr)
  np.testing.assert_allclose(g.alpha, 1.0 + 0.1 * np.arange(4), atol=1e-10)
  h = laws.fit(form, grid, np.stack([rr, rr]))
  assert h.alpha.shape == (2, 4)
  np.testing.assert_allclose(h.alpha[1], g.alpha, rtol=1e-12)
  np.testing.assert_allclose(g.predict(grid), rr, atol=1e-10)


def test_rows_that_cannot_be_fitted_are_nan():
  d = np.array([[0.0, 1.0, np.nan, 2.0],   # 2 usable points at d > 0: fitted
                [0.0, 1.0, 2.0, 3.0],      # r missing but at one d > 0
                [0.0, 1.5, 1.5, 1.5],      # one distinct d > 0: singular
                [0.0, 0.0, 0.0, 0.0]])     # nothing but the start
  r = np.array([[0.0, 0.5, 0.7, 0.8],
                [0.0, np.nan, np.nan, 0.9],
                [0.0, 0.4, 0.5, 0.6],
                [0.0, 0.0, 0.0, 0.0]])
  for form in laws.FORMS:
    with warnings.catch_warnings():
      warnings.simplefilter("error")
      f = laws.fit(form, d, r)
    assert np.isfinite(f.alpha[0]) and np.isfinite(f.beta[0])
    for field in (f.alpha, f.beta, f.rmse, f.r2):
      assert np.all(np.isnan(field[1:]))
    np.testing.assert_array_equal(f.n, [3, 2, 4, 4])
    np.testing.assert_array_equal(f.n_positive, [2, 1, 3, 0])
  # Constant r: nothing for R^2 to explain, NaN; the coefficients (0, 0) are fine.
  f = laws.fit("bon", D, np.zeros(D.size))
  assert f.alpha == 0 and f.beta == 0 and np.isnan(f.r2) and f.rmse == 0


def test_start_point_and_negative_kl():
  np.testing.assert_array_equal(laws.distance([-1e-9, 0.0, 4.0, np.nan]), [0, 0, 2, np.nan])
  kl = np.array([-3e-7, 0.1, 0.4, 0.9, 1.6])  # the SFT point's estimate a hair below 0
  d = laws.distance(kl)
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # no 0 * log 0, no sqrt of a negative
    score = 0.5 + laws.predict("rl", 0.8, 0.3, d)
    np.testing.assert_array_equal(laws.predict("rl", 0.8, 0.3, [0.0]), [0.0])
    f = laws.fit_curve("rl", kl, score)
  assert f.alpha == pytest.approx(0.8, abs=1e-10) and f.beta == pytest.approx(0.3, abs=1e-10)
  assert f.n == 5 and f.n_positive == 4


def test_fit_curve_subtracts_the_start():
  kl = np.linspace(0, 4, 12)
  d = laws.distance(kl)
  start = np.array([0.5, 0.3, 0.1])
  r = laws.predict("bon", np.array([[0.6], [0.7], [0.8]]), 0.1, d)
  score = start[:, None] + r
  f = laws.fit_curve("bon", kl, score)  # start defaults to score[..., 0]
  np.testing.assert_allclose(f.alpha, [0.6, 0.7, 0.8], atol=1e-10)
  np.testing.assert_allclose(f.beta, 0.1, atol=1e-10)
  # An explicit start, one per row, or a scalar.
  noisy = score.copy()
  noisy[:, 0] += 0.01  # the first evaluation no longer the start's score
  g = laws.fit_curve("bon", kl, noisy, start=start)
  h = laws.fit("bon", d, noisy - start[:, None])
  np.testing.assert_array_equal(g.alpha, h.alpha)
  np.testing.assert_array_equal(g.r2, h.r2)
  s = laws.fit_curve("bon", kl, score[0], start=0.5)
  assert s.alpha == pytest.approx(0.6, abs=1e-10)
  nan_start = score.copy()
  nan_start[1, 0] = np.nan
  assert np.isnan(laws.fit_curve("bon", kl, nan_start).alpha[1])


@pytest.mark.parametrize("form,alpha,beta", [
    ("rl", 1.0, 0.4), ("rl", 0.3, 0.5), ("rl", -0.5, 1.0), ("rl", 2.0, 1.2),
    ("bon", 0.9, 0.15), ("bon", 0.5, 0.4), ("bon", 2.0, 0.35)])
def test_peak_is_the_argmax_of_the_fitted_curve(form, alpha, beta):
  grid = np.linspace(0.0, 10.0, 200001)  # spacing 5e-5
  curve = laws.predict(form, alpha, beta, grid)
  i = int(np.argmax(curve))
  d_star, r_star = laws.peak(form, alpha, beta)
  assert 0 < i < grid.size - 1  # an interior maximum: the grid covers it
  assert abs(d_star - grid[i]) <= 5e-5
  # R(d*) is the maximum: the grid's best point at most rounding above it, and below it by
  # at most R''/2 (5e-5)^2 (~1e-9 here).
  assert curve[i] - 1e-12 <= r_star <= curve[i] + 1e-8
  assert laws.predict(form, alpha, beta, d_star) == pytest.approx(r_star, rel=1e-12)


def test_peak_where_the_curve_never_turns_down_or_only_falls():
  grid = np.linspace(0.0, 50.0, 5001)
  cases = [("rl", 0.5, -0.2, np.inf), ("rl", -0.1, -0.3, np.inf), ("rl", 0.5, 0.0, np.inf),
           ("bon", 0.5, -0.1, np.inf), ("bon", 0.5, 0.0, np.inf),
           ("rl", -0.5, 0.0, 0.0), ("bon", -0.5, 0.0, 0.0), ("bon", 0.0, 0.0, 0.0),
           ("bon", -0.3, 0.2, 0.0), ("bon", 0.0, 0.2, 0.0)]
  for form, alpha, beta, expect in cases:
    d_star, r_star = laws.peak(form, alpha, beta)
    assert d_star == expect and r_star == expect, (form, alpha, beta)
    i = int(np.argmax(laws.predict(form, alpha, beta, grid)))
    assert i == (grid.size - 1 if expect == np.inf else 0), (form, alpha, beta)
  # Vectorised, with NaN (a failed fit) kept apart from inf (no turn-down), and an RL
  # peak too far to represent (exp overflows) is inf, quietly.
  alpha = np.array([[1.0, np.nan, 0.5], [1000.0, 0.4, 1.0]])
  beta = np.array([[0.4, 0.4, -0.1], [1e-3, np.nan, 0.4]])
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    d_star, r_star = laws.peak("rl", alpha, beta)
  assert d_star.shape == (2, 3)
  np.testing.assert_allclose(d_star[[0, 1], [0, 2]], np.exp(1.0 / 0.4 - 1.0))
  np.testing.assert_allclose(r_star[[0, 1], [0, 2]], 0.4 * np.exp(1.0 / 0.4 - 1.0))
  assert np.isnan(d_star[0, 1]) and np.isnan(r_star[1, 1])
  assert d_star[0, 2] == np.inf and d_star[1, 0] == np.inf and r_star[1, 0] == np.inf
  f = laws.fit("bon", D, laws.predict("bon", 0.9, 0.15, D))
  assert f.peak()[0] == pytest.approx(3.0) and f.peak()[1] == pytest.approx(0.81 / 0.6)


def test_errors_say_what_is_wrong():
  for call in (lambda: laws.fit("ppo", D, D), lambda: laws.predict("BoN", 1, 1, D),
               lambda: laws.peak("", 1, 1), lambda: laws.fit_curve("best-of-n", D, D)):
    with pytest.raises(ValueError, match="unknown law form .* expected one of"):
      call()
  with pytest.raises(ValueError, match="same number of points J"):
    laws.fit("rl", D, D[:-1])
  with pytest.raises(ValueError, match="do not broadcast"):
    laws.fit("rl", np.ones((3, 4)), np.ones((2, 4)))
  with pytest.raises(ValueError, match=r"curves \[\.\.\., J\]"):
    laws.fit("rl", 1.0, 1.0)
  with pytest.raises(ValueError, match="d must be >= 0"):
    laws.fit("rl", D - 0.1, D)
  with pytest.raises(ValueError, match="d must be >= 0"):
    laws.predict("rl", 1.0, 1.0, [-1.0])
  with pytest.raises(ValueError, match="weights must be >= 0"):
    laws.fit("bon", D, D, weights=-np.ones(D.size))
  with pytest.raises(ValueError, match="weights of shape"):
    laws.fit("bon", D, D, weights=np.ones(3))
  with pytest.raises(ValueError, match="same S"):
    laws.loglinear([1e6, 1e7], np.ones((4, 3)))
  with pytest.raises(ValueError, match="parameter counts > 0"):
    laws.loglinear([0.0, 1e7], [1.0, 2.0])


def test_loglinear_recovers_a_known_line():
  x = np.array([1e6, 3e6, 1e7, 4e7, 1e8])
  a, b = laws.loglinear(x, 2.0 + 0.3 * np.log10(x))
  assert a == pytest.approx(2.0, abs=1e-10) and b == pytest.approx(0.3, abs=1e-10)
  # [C, S]: a line per replicate column, NaN sizes masked, too few sizes NaN.
  lines = np.array([[1.0, -0.1], [0.5, 0.2], [0.0, 0.05], [3.0, 1.0]])
  y = lines[:, :1] + lines[:, 1:] * np.log10(x)
  y[1, [0, 3]] = np.nan
  y[3, 1:] = np.nan  # one size left
  a, b = laws.loglinear(x, y)
  np.testing.assert_allclose(a[:3], lines[:3, 0], atol=1e-9)
  np.testing.assert_allclose(b[:3], lines[:3, 1], atol=1e-10)
  assert np.isnan(a[3]) and np.isnan(b[3])
  # Least squares, not interpolation: noisy points against np.polyfit on log10 x.
  noisy = 1.0 + 0.2 * np.log10(x) + np.array([0.03, -0.02, 0.01, -0.04, 0.02])
  a, b = laws.loglinear(x, noisy)
  np.testing.assert_allclose([b, a], np.polyfit(np.log10(x), noisy, 1), rtol=1e-10)
  # Equal sizes: no line.
  assert np.all(np.isnan(laws.loglinear([1e7, 1e7], [1.0, 2.0])))
