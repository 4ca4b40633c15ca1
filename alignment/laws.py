"""The scaling laws of Gao, Schulman and Hilton 2022 ("Scaling Laws for Reward Model
Overoptimization"), fitted to curves by least squares: pure numpy, vectorised.

Gao et al. measure how far a policy has moved by d = sqrt(KL(policy || initial policy))
(nats), and find that the gold reward it gains over the initial policy follows

  RL          R(d) = d (alpha - beta ln d)
  best-of-n   R(d) = d (alpha - beta d)

with no intercept (R(0) = 0: the initial policy gains nothing over itself), and that
alpha and beta move smoothly with the proxy reward model's size (roughly linearly in the
log of its parameter count, `loglinear`). (For best-of-n Gao et al. use the analytic
KL_bon = ln n - (n - 1)/n.) Both are fitted by ordinary least squares on two regressors:

  RL   x1 = d, x2 = -d ln d  (d ln d := 0 at d = 0, its limit: the start point is fine);
  BoN  x1 = d, x2 = -d^2;
  R ~ alpha x1 + beta x2, no intercept.

Why closed form and not np.linalg.lstsq: the study fits every column of a `Bootstrap`'s
replicate axis (the data, thousands of item resamples, the jackknife columns; see
alignment/stats.py), so every fit here works on arrays [..., J] at once, leading axes
broadcast, through the 2 x 2 normal equations (sums over the last axis), with no Python
loop over rows. Normal equations square the design's condition number; a system whose
regressors are nearly collinear (sin^2 of their angle below 1e-10, where the solution
would keep fewer than about 5 correct digits) is called singular and gives NaN. Over the
study's range of d (0 to a few) the two regressors are far from collinear and the closed
form agrees with lstsq to ~1e-12 (tests/test_laws.py).

NaN policy. A point is used where d and r are both finite (and its weight, if any, is
finite and > 0); the others are masked out of the sums row by row, so a row with a missing
evaluation is fitted on the rest. A row with fewer than 2 usable points at d > 0 (points at
d = 0 are residuals but constrain neither coefficient: both regressors vanish there), or a
singular system, gets alpha = beta = rmse = r2 = NaN: a clear "no fit" that
`Bootstrap.variance` leaves out of the item variance and `Bootstrap.claim` turns into
"unclear" once more than 10% of the resamples have it.

Goodness of fit. rmse = sqrt(sum w e^2 / sum w) over the usable points (d = 0 ones included:
the law is judged on every point it was given; with fit_curve's r(0) = 0 these fit exactly);
r2 = 1 - sum w e^2 / sum w (r - mean_w r)^2, R^2 about the (weighted) mean of r, the
usual one, not about 0: the no-intercept model is compared with a flat line at the curve's
mean, so r2 can be negative where the law fits worse than a constant, and it is NaN where r
is constant (nothing to explain). (R^2 about 0, which lstsq's no-intercept users sometimes
report, is near 1 for almost any curve that moves away from 0 and says little.)

The peak. A fitted curve rises, and with beta > 0 turns down: overoptimisation, the proxy
being optimised past the point where the gold reward still follows it. `peak` gives where
(d*; the KL there is d*^2) and how high (R*):

  RL   R'(d) = alpha - beta (ln d + 1) = 0  =>  d* = exp(alpha/beta - 1), and
       R* = d* (alpha - beta ln d*) = d* (alpha - (alpha - beta)) = beta d*;
       R''(d) = -beta / d < 0 for beta > 0: a maximum. R'(0+) = +inf (the -beta ln d term),
       so with beta > 0 an RL curve always rises first and d* > 0 whatever alpha's sign.
  BoN  R'(d) = alpha - 2 beta d = 0  =>  d* = alpha / (2 beta), R* = alpha^2 / (4 beta);
       R'' = -2 beta < 0: a maximum. With alpha <= 0 the vertex is at d* <= 0, outside
       d >= 0: the curve only falls, and its highest point on d >= 0 is the start,
       d* = 0, R* = 0.

beta < 0 (either form), or beta = 0 with alpha > 0: the fitted curve never turns down, it
grows without bound; `peak` returns d* = R* = inf, not NaN: the fit succeeded and says "no
overoptimisation within the law", which differs from a failed fit (NaN) and is ordered
correctly by comparisons (the peak is further than any observed d). beta = 0 with alpha <= 0
has its highest point at the start: d* = R* = 0. NaN alpha or beta: NaN. For a bootstrap
interval, inf columns are non-finite and left out of the item variance like NaN ones (more
than 10% of them and the claim is "unclear"): where resamples disagree on whether the curve
turns down at all, the peak is not estimated. A d* beyond the largest d observed is an
extrapolation of the law; callers comparing peaks should say so.
"""
from __future__ import annotations

import dataclasses

import numpy as np

FORMS = ("rl", "bon")
# sin^2 of the angle between the two regressors below which the 2 x 2 system is singular:
# the normal equations lose about log10(4 / SINGULAR) ~ 10.6 of float64's ~15.9 digits.
SINGULAR = 1e-10


def _check_form(form: str) -> str:
  if form not in FORMS:
    raise ValueError(f"unknown law form {form!r}: expected one of {FORMS} ('rl': "
                     f"R = d (alpha - beta ln d); 'bon': R = d (alpha - beta d))")
  return form


def distance(kl) -> np.ndarray:
  """d = sqrt(max(KL, 0)) elementwise (float64; NaN stays NaN).

  KL(policy || initial) is >= 0, but the study estimates it from samples, and at or near
  the start (the SFT policy against itself) the estimate can come out a hair below 0;
  those are clipped to 0 (the start) rather than turned into NaN, so the start point
  stays in the fit. A clearly negative KL is not this function's business to detect."""
  kl = np.asarray(kl, np.float64)
  with np.errstate(invalid="ignore"):
    return np.sqrt(np.maximum(kl, 0.0))  # np.maximum keeps NaN


def _check_distance(d: np.ndarray) -> None:
  with np.errstate(invalid="ignore"):
    if np.any(d < 0):
      raise ValueError(f"d must be >= 0 (a distance sqrt(KL); use laws.distance(kl) to clip "
                       f"the estimation noise of KL near 0), got min {np.nanmin(d)}")


def _regressors(form: str, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(x1, x2) with R = alpha x1 + beta x2: RL (d, -d ln d), d ln d := 0 at d = 0 (its
  limit; no 0 * -inf); BoN (d, -d^2). NaN d gives NaN regressors."""
  if form == "rl":
    safe = np.where(d > 0, d, 1.0)  # NaN stays NaN; 0 -> 1, whose log is 0
    return d, np.where(d == 0, 0.0, -d * np.log(safe))
  return d, -d * d


def predict(form: str, alpha, beta, d) -> np.ndarray:
  """R(d) = alpha x1(d) + beta x2(d), numpy broadcasting among alpha, beta and d (for fits
  of shape [...] on points [..., J] pass alpha[..., None], beta[..., None]; `Fit.predict`
  does). d must be >= 0; NaN in gives NaN out."""
  _check_form(form)
  d = np.asarray(d, np.float64)
  _check_distance(d)
  x1, x2 = _regressors(form, d)
  return np.asarray(alpha, np.float64) * x1 + np.asarray(beta, np.float64) * x2


@dataclasses.dataclass(frozen=True)
class Fit:
  """A law fitted to each row of curves [..., J]: every field [...] (numpy arrays).

  alpha, beta: the coefficients (NaN: no fit, see the module docstring); rmse: the
  (weighted) root mean squared residual; r2: R^2 about the (weighted) mean of r, NaN where
  r is constant or there is no fit; n: the usable points (finite d and r, weight > 0),
  those at d = 0 included; n_positive: those of them at d > 0, the ones that constrain the
  fit (2 needed)."""
  form: str
  alpha: np.ndarray
  beta: np.ndarray
  rmse: np.ndarray
  r2: np.ndarray
  n: np.ndarray
  n_positive: np.ndarray

  def predict(self, d) -> np.ndarray:
    """The fitted curves at d: [..., J'] for d [J'] or [..., J'] (leading axes broadcast)."""
    return predict(self.form, self.alpha[..., None], self.beta[..., None], d)

  def peak(self) -> tuple[np.ndarray, np.ndarray]:
    return peak(self.form, self.alpha, self.beta)


def _points(d, r) -> tuple[np.ndarray, np.ndarray]:
  """d and r as float64 arrays broadcast to one shape [..., J]; ValueError where they do
  not have the same J or their leading axes do not broadcast."""
  d = np.asarray(d, np.float64)
  r = np.asarray(r, np.float64)
  if d.ndim == 0 or r.ndim == 0:
    raise ValueError(f"d and r must be curves [..., J] (points on the last axis), got shapes "
                     f"{d.shape} and {r.shape}")
  if d.shape[-1] != r.shape[-1]:
    raise ValueError(f"d and r must have the same number of points J on the last axis, got "
                     f"shapes {d.shape} and {r.shape}")
  try:
    shape = np.broadcast_shapes(d.shape, r.shape)
  except ValueError:
    raise ValueError(f"the leading axes of d {d.shape} and r {r.shape} do not "
                     f"broadcast") from None
  return np.broadcast_to(d, shape), np.broadcast_to(r, shape)


def fit(form: str, d, r, weights=None) -> Fit:
  """Least-squares fit of R(d) (form 'rl' or 'bon', no intercept) to every row of r.

  d, r: [..., J] (leading axes broadcast: one d grid [J] for curves [C, J] is fine; J must
  match); weights: optional, broadcastable to [..., J], >= 0 (weighted least squares, e.g.
  inverse variances of the points; NaN or 0 drops a point). Non-finite d or r are masked out
  row by row; see the module docstring for the NaN policy, rmse and r2."""
  _check_form(form)
  d, r = _points(d, r)
  _check_distance(d)
  if weights is None:
    w = np.ones(d.shape)
  else:
    w = np.asarray(weights, np.float64)
    try:
      w = np.broadcast_to(w, d.shape)
    except ValueError:
      raise ValueError(f"weights of shape {w.shape} do not broadcast to the points' shape "
                       f"{d.shape}") from None
    with np.errstate(invalid="ignore"):
      if np.any(w < 0):
        raise ValueError("weights must be >= 0 (NaN or 0 drops a point)")
  with np.errstate(invalid="ignore"):
    use = np.isfinite(d) & np.isfinite(r) & np.isfinite(w) & (w > 0)
  w = np.where(use, w, 0.0)
  d0 = np.where(use, d, 0.0)
  r0 = np.where(use, r, 0.0)
  x1, x2 = _regressors(form, d0)
  s11 = np.sum(w * x1 * x1, -1)
  s12 = np.sum(w * x1 * x2, -1)
  s22 = np.sum(w * x2 * x2, -1)
  t1 = np.sum(w * x1 * r0, -1)
  t2 = np.sum(w * x2 * r0, -1)
  det = s11 * s22 - s12 * s12
  n = use.sum(-1)
  n_positive = (use & (d0 > 0)).sum(-1)
  ok = (n_positive >= 2) & (det > SINGULAR * s11 * s22)
  with np.errstate(invalid="ignore", divide="ignore"):
    alpha = np.where(ok, (s22 * t1 - s12 * t2) / det, np.nan)
    beta = np.where(ok, (s11 * t2 - s12 * t1) / det, np.nan)
    e = r0 - alpha[..., None] * x1 - beta[..., None] * x2
    sw = np.sum(w, -1)
    sse = np.sum(w * e * e, -1)
    mean = np.sum(w * r0, -1) / sw
    sst = np.sum(w * (r0 - mean[..., None]) ** 2, -1)
    rmse = np.where(ok, np.sqrt(sse / sw), np.nan)
    r2 = np.where(ok & (sst > 0), 1.0 - sse / sst, np.nan)
  return Fit(form=form, alpha=alpha, beta=beta, rmse=rmse, r2=r2, n=n, n_positive=n_positive)


def fit_curve(form: str, kl, score, start=None, weights=None) -> Fit:
  """`fit` on a study's curves: r = score - start, d = distance(kl).

  kl, score: [..., J]; start: the score of the initial policy, a scalar or one per row
  [...]; by default score[..., 0], the first evaluation, which in the study's curves is
  the SFT policy at KL 0 (so r starts at exactly 0 and the law's R(0) = 0 holds there). A
  NaN start leaves the whole row NaN: no fit."""
  score = np.asarray(score, np.float64)
  if score.ndim == 0:
    raise ValueError("score must be curves [..., J], got a scalar")
  if start is None:
    base = score[..., :1]
  else:
    base = np.asarray(start, np.float64)[..., None]
  return fit(form, distance(kl), score - base, weights)


def peak(form: str, alpha, beta) -> tuple[np.ndarray, np.ndarray]:
  """(d*, R*): where on d >= 0 the fitted curve is highest, and its value there,
  elementwise over alpha, beta (broadcast). The KL at the peak is d*^2.

  beta > 0: RL d* = exp(alpha/beta - 1), R* = beta d*; BoN d* = alpha / (2 beta),
  R* = alpha^2 / (4 beta) where alpha > 0, and d* = R* = 0 where alpha <= 0 (the vertex is
  not in d >= 0). beta < 0, or beta = 0 with alpha > 0: the curve never turns down, d* =
  R* = inf. beta = 0 with alpha <= 0: d* = R* = 0. NaN alpha or beta: NaN. Derivations and
  why inf and not NaN: the module docstring."""
  _check_form(form)
  alpha, beta = np.broadcast_arrays(np.asarray(alpha, np.float64), np.asarray(beta, np.float64))
  turns = beta > 0
  with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
    if form == "rl":
      d = np.exp(alpha / beta - 1.0)
      value = beta * d
    else:
      d = np.where(alpha > 0, alpha / (2.0 * beta), 0.0)
      value = np.where(alpha > 0, alpha * alpha / (4.0 * beta), 0.0)
  unbounded = (beta < 0) | ((beta == 0) & (alpha > 0))
  at_start = (beta == 0) & (alpha <= 0)
  d = np.where(turns, d, np.where(unbounded, np.inf, np.where(at_start, 0.0, np.nan)))
  value = np.where(turns, value, np.where(unbounded, np.inf, np.where(at_start, 0.0, np.nan)))
  return d, value


def loglinear(x, y) -> tuple[np.ndarray, np.ndarray]:
  """Least-squares line y = a + b log10(x) across model sizes: x [S] parameter counts
  (> 0), y [..., S] (e.g. [C, S]: a law's alpha per size on every replicate column).
  Returns (a, b), each [...]. Non-finite y (a size whose fit failed) are masked out row by
  row; a row with fewer than 2 distinct sizes left gets NaN.

  Why log10: Gao et al. plot alpha and beta against the reward model's parameter count on
  a log axis, where they are close to straight; b is the change per decade of size."""
  x = np.asarray(x, np.float64)
  y = np.asarray(y, np.float64)
  if x.ndim != 1 or y.ndim == 0 or y.shape[-1] != x.shape[0]:
    raise ValueError(f"x must be sizes [S] and y values [..., S] with the same S, got shapes "
                     f"{x.shape} and {y.shape}")
  if not np.all(np.isfinite(x) & (x > 0)):
    raise ValueError(f"x must be finite parameter counts > 0, got {x}")
  u = np.log10(x)
  use = np.isfinite(y)
  m = use.astype(np.float64)
  y0 = np.where(use, y, 0.0)
  n = m.sum(-1)
  with np.errstate(invalid="ignore", divide="ignore"):
    ubar = np.sum(m * u, -1) / n
    ybar = np.sum(y0, -1) / n
    du = np.where(use, u - ubar[..., None], 0.0)
    suu = np.sum(du * du, -1)
    b = np.sum(du * (y0 - ybar[..., None]), -1) / suu
    a = ybar - b * ubar
  # Distinct sizes: the spread of log10 x beyond rounding (sizes equal to ~1e-6 relative).
  ok = (n >= 2) & (suu > 1e-12 * np.maximum(1.0, np.sum(m * u * u, -1)))
  return np.where(ok, a, np.nan), np.where(ok, b, np.nan)
