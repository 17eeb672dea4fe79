"""The surrogate estimator: a sparse linear model of the score over random keep-masks.

Each evaluated mask is a row: which spans were deleted (1) or kept (0), and
the score it produced. A LASSO fit `score ≈ b + Σ w_i · deleted_i` gives
every span a weight in the scorer's unit: the score expected from deleting
that span, with the others deleted at random around it. Unlike
leave-one-out it sees interactions that only show when several spans go at
once: a fact stated twice is lost only when both copies are deleted, which
random masks do a quarter of the time, so both copies get weight.

The penalty is a fixed fraction of the smallest one that zeroes every
weight, so it scales with the scores. Uncertainty comes from a bootstrap
over the masks (the same penalty refitted on 100 resampled sets of rows);
all resamples run at once as one batched proximal-gradient (FISTA) problem
in numpy. With more spans than masks the problem is underdetermined: only
the spans the fit selected are resampled, the rest keep weight 0 and no
standard error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ALPHA_RATIO = 0.01
BOOTSTRAP = 100
_ITERATIONS = 500
_TOLERANCE = 1e-5  # stop when no weight moves more than this share of the largest weight
CHECK_EVERY = 5  # iterations between convergence checks


@dataclass
class SurrogateResult:
    weights: np.ndarray
    stderr: np.ndarray  # NaN where a span was never (or always) deleted
    intercept: float
    alpha: float
    r2: float | None
    bootstrap: int

    def predict(self, deleted: np.ndarray) -> np.ndarray:
        return self.intercept + deleted @ self.weights


def deleted_matrix(dropped_sets: list[tuple[int, ...]], n_spans: int) -> np.ndarray:
    x = np.zeros((len(dropped_sets), n_spans))
    for row, dropped in enumerate(dropped_sets):
        x[row, list(dropped)] = 1.0
    return x


def fit(x: np.ndarray, y: np.ndarray, *, seed: int, bootstrap: int = BOOTSTRAP) -> SurrogateResult:
    """LASSO weights with bootstrap standard errors (see module doc)."""
    m, n = x.shape
    y = np.asarray(y, dtype=np.float64)
    xc, yc = x - x.mean(axis=0), y - y.mean()
    alpha_max = float(np.abs(xc.T @ yc).max() / m) if m and n else 0.0
    alpha = ALPHA_RATIO * alpha_max
    weights = _lasso_batch(xc[None], yc[None], alpha)[0]
    stderr = np.full(n, np.nan)
    # With more spans than masks, resample only the spans the fit selected:
    # the others have weight 0 and are never significant, and refitting all
    # of an underdetermined problem 100 times would take seconds per run.
    cols = np.arange(n) if n <= m else np.flatnonzero(weights)
    if bootstrap > 1 and len(cols):
        rows = np.random.default_rng(seed).integers(0, m, size=(bootstrap, m))
        xs, ys = x[rows][:, :, cols], y[rows]
        xs = xs - xs.mean(axis=1, keepdims=True)
        ys = ys - ys.mean(axis=1, keepdims=True)
        stderr[cols] = _lasso_batch(xs, ys, alpha, start=weights[cols]).std(axis=0, ddof=1)
    constant = np.ptp(x, axis=0) == 0  # never or always deleted: no information
    weights[constant] = 0.0
    stderr[constant] = np.nan
    intercept = float(y.mean() - x.mean(axis=0) @ weights)
    resid = y - (intercept + x @ weights)
    total = float(((y - y.mean()) ** 2).sum())
    r2 = None if total == 0 else float(1 - (resid**2).sum() / total)
    return SurrogateResult(weights, stderr, intercept, alpha, r2, bootstrap)


def _lasso_batch(xs: np.ndarray, ys: np.ndarray, alpha: float, start: np.ndarray | None = None) -> np.ndarray:
    """min_w 1/(2m)·‖y − Xw‖² + α‖w‖₁ for a batch of centred (X, y), by FISTA.

    The bootstrap's 100 problems often need every one of the iterations, so each iteration
    is kept to a few whole-array operations: the step is folded into the Gram matrix and
    its right-hand side, the soft threshold is one clamp, and convergence is checked every
    CHECK_EVERY iterations (a few more steps than needed are harmless: FISTA only improves).
    """
    batch, m, n = xs.shape
    # The gradient needs X^T X w - X^T y: with fewer spans than masks the n×n
    # Gram matrix is the cheaper operand, otherwise the m×n matrix itself.
    gram = n <= m
    if gram:
        xs_t = np.swapaxes(xs, 1, 2)
        a, c = xs_t @ xs / m, (xs_t @ ys[..., None])[..., 0] / m
        lipschitz = np.linalg.eigvalsh(a)[:, -1]
    else:
        lipschitz = np.linalg.norm(xs, ord=2, axis=(1, 2)) ** 2 / m
    step = (1.0 / np.maximum(lipschitz, 1e-12))[:, None]
    threshold = step * alpha
    if gram:
        a_step, c_step = a * step[..., None], c * step  # u = z - step·(A z - c) = z - (step·A) z + step·c
    w = np.zeros((batch, n)) if start is None else np.tile(start, (batch, 1))
    z, t = w.copy(), 1.0
    for iteration in range(1, _ITERATIONS + 1):
        if gram:
            u = z - (a_step @ z[..., None])[..., 0] + c_step
        else:
            resid = (xs @ z[..., None])[..., 0] - ys
            u = z - step * (resid[:, None, :] @ xs)[:, 0, :] / m
        w_next = u - np.minimum(np.maximum(u, -threshold), threshold)  # the soft threshold (faster than np.clip)
        t_next = (1 + np.sqrt(1 + 4 * t * t)) / 2
        z = w_next + ((t - 1) / t_next) * (w_next - w)
        if iteration % CHECK_EVERY == 0:
            scale = max(np.abs(w_next).max(initial=0.0), 1e-12)
            if np.abs(w_next - w).max(initial=0.0) <= _TOLERANCE * scale:
                return w_next
        w, t = w_next, t_next
    return w
