"""Cubic B-spline interpolation: coefficients of a grid, and their evaluation.

A cubic B-spline through the samples `f_0 .. f_{n-1}` of each axis is
`s(t) = sum_k c_k beta3(t - k)`; at the nodes it interpolates,
`(c_{i-1} + 4 c_i + c_{i+1}) / 6 = f_i`. The `n + 2` coefficients `c_{-1} .. c_n` are
fixed by the natural end conditions `s''(0) = s''(n-1) = 0`, which give `c_0 = f_0` and
`c_{n-1} = f_{n-1}` and leave a tridiagonal system for the interior. The coefficient
array is stored with that one extra coefficient at each end of every axis, so evaluating
anywhere in `[0, n - 1]` reads the 4 neighbouring coefficients of each axis and no bounds.

Scaling (cryojax's): the stored coefficients are `c / 6` per axis, i.e. those of the
basis `6 beta3` whose node values are (1, 4, 1), so coefficient arrays are exchangeable
with cryojax's `compute_spline_coefficients`.
"""

import functools
import operator

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Inexact


def _coefficients_along(values: Inexact[Array, "..."], axis: int) -> Inexact[Array, "..."]:
    """The `n + 2` spline coefficients along one axis (natural end conditions)."""
    values = jnp.moveaxis(values, axis, 0)
    n = values.shape[0]
    rest = values.shape[1:]
    flat = values.reshape(n, -1)
    first, last = flat[:1], flat[-1:]
    if n == 3:
        interior = (6.0 * flat[1:2] - first - last) / 4.0
    else:
        m = n - 2
        rhs = 6.0 * flat[1:-1]
        rhs = rhs.at[0].add(-first[0]).at[-1].add(-last[0])
        ones = jnp.ones(m, flat.dtype)
        lower = ones.at[0].set(0.0)
        upper = ones.at[-1].set(0.0)
        interior = jax.lax.linalg.tridiagonal_solve(lower, 4.0 * ones, upper, rhs)
    inner = jnp.concatenate([first, interior, last])
    # Natural ends: c_{-1} = 2 c_0 - c_1 and c_n = 2 c_{n-1} - c_{n-2}.
    before = 2.0 * inner[:1] - inner[1:2]
    after = 2.0 * inner[-1:] - inner[-2:-1]
    coefficients = jnp.concatenate([before, inner, after]).reshape((n + 2,) + rest)
    return jnp.moveaxis(coefficients, 0, axis)


def compute_spline_coefficients(values: Inexact[Array, "..."]) -> Inexact[Array, "..."]:
    """Cubic B-spline coefficients of a grid (1D to 3D; real or complex).

    **Arguments:**

    - `values`: the samples, every axis of length at least 3.

    **Returns:**

    The coefficients, each axis 2 longer than `values`' (one extra coefficient at each
    end); `evaluate_spline` interpolates `values` from them.
    """
    values = jnp.asarray(values)
    if not jnp.issubdtype(values.dtype, jnp.inexact):
        values = values.astype(float)
    if not 1 <= values.ndim <= 3 or min(values.shape) < 3:
        raise ValueError(
            "compute_spline_coefficients: needs a 1D to 3D grid with every axis at least 3 "
            f"long; got shape {values.shape}"
        )
    return _coefficients(values)


# Compiled: eager dispatch of the per-axis solves costs seconds per new shape.
@jax.jit
def _coefficients(values: Inexact[Array, "..."]) -> Inexact[Array, "..."]:
    for axis in range(values.ndim):
        values = _coefficients_along(values, axis) / 6.0
    return values


def _cubic_weights(t: Float[Array, "..."]) -> list[Float[Array, "..."]]:
    """The four B-spline weights of nodes floor-1 .. floor+2 at fractional offset t."""
    t2, t3 = t * t, t * t * t
    # Times 6: the basis of the stored (cryojax-scaled) coefficients is 6 beta3.
    return [
        (1.0 - t) ** 3,
        3.0 * t3 - 6.0 * t2 + 4.0,
        -3.0 * t3 + 3.0 * t2 + 3.0 * t + 1.0,
        t3,
    ]


def evaluate_spline(
    coefficients: Inexact[Array, "..."],
    coordinates: tuple[Float[Array, "..."], ...],
    cval: float = 0.0,
) -> Inexact[Array, "..."]:
    """Evaluate a cubic B-spline at fractional grid indices.

    **Arguments:**

    - `coefficients`: from `compute_spline_coefficients` (each axis `n + 2` long).
    - `coordinates`: one array of fractional indices per axis, in the index space of the
      original samples (`0 .. n - 1`), all of one shape.
    - `cval`: the value at points more than half a sample outside `[0, n - 1]` along any
      axis.

    **Returns:**

    The spline at the points, shaped as each coordinate array.
    """
    coefficients = jnp.asarray(coefficients)
    if len(coordinates) != coefficients.ndim:
        raise ValueError(
            f"evaluate_spline: {coefficients.ndim}D coefficients but {len(coordinates)} "
            "coordinate arrays"
        )
    return _evaluate(coefficients, tuple(jnp.asarray(c) for c in coordinates), cval)


@jax.jit
def _evaluate(coefficients, coordinates, cval):
    ndim = coefficients.ndim
    sizes = [s - 2 for s in coefficients.shape]
    inside, indices, weights = [], [], []
    for axis, (index, n) in enumerate(zip(coordinates, sizes)):
        # Within half a sample of the grid counts as inside (the edge cells' cubics are
        # extended there), so rounding at the last node does not zero a point.
        inside.append((index >= -0.5) & (index < n - 0.5))
        cell = jnp.clip(jnp.floor(index), 0, n - 2)
        # Coefficient c_k is stored at k + 1: nodes cell-1 .. cell+2 at cell .. cell+3.
        taps = cell.astype(jnp.int32)[..., None] + jnp.arange(4)
        # Each axis' 4 taps on their own trailing axis, so one gather reads all 4^ndim.
        expand = (Ellipsis,) + tuple(slice(None) if a == axis else None for a in range(ndim))
        indices.append(jnp.clip(taps, 0, n + 1)[expand])
        weights.append(jnp.stack(_cubic_weights(index - cell), axis=-1)[expand])
    neighbours = coefficients[tuple(indices)]
    weight = functools.reduce(operator.mul, weights)
    value = jnp.sum(weight * neighbours, axis=tuple(range(-ndim, 0)))
    mask = functools.reduce(operator.and_, inside)
    return jnp.where(mask, value, jnp.asarray(cval, coefficients.dtype))
