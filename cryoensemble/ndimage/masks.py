"""Real-space corrections of Fourier-space interpolation."""

import functools
import operator

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Inexact


class SincCorrectionMask(eqx.Module):
    """Undo, ahead of time, the attenuation that linear interpolation of a spectrum causes.

    Linearly interpolating the DFT `F[k]` of a grid of shape `shape` between its samples
    is, to leading order, the DFT of the grid multiplied by `prod_j sinc^2(x_j / n_j)`,
    with `x_j` the voxel's offset from the origin voxel `n_j // 2` (the triangle kernel's
    transform; the rest is aliasing). Dividing the grid by that product before the
    transform, which is what this mask does, makes `FourierSliceExtraction` with linear
    interpolation return the grid's projections instead of projections darkened towards
    the edges of the box (by up to `(2 / pi)^2` per axis).
    """

    array: Float[Array, "..."]

    def __init__(self, shape: tuple[int, ...], power: int = 2):
        """**Arguments:**

        - `shape`: the shape of the real-space grid that will be transformed (after any
          padding: the correction depends on the size of the transform).
        - `power`: the power of the sinc to divide by; 2 for linear interpolation.
        """
        shape = tuple(int(s) for s in shape)
        profiles = [np.sinc((np.arange(n) - n // 2) / n) ** power for n in shape]
        grid = functools.reduce(operator.mul, np.ix_(*profiles))
        self.array = jnp.asarray(1.0 / grid)

    def __call__(self, real_array: Inexact[Array, "..."]) -> Inexact[Array, "..."]:
        """Apply the correction to a real-space grid of the mask's shape."""
        real_array = jnp.asarray(real_array)
        if real_array.shape[-self.array.ndim :] != self.array.shape:
            raise ValueError(
                f"SincCorrectionMask: the mask has shape {self.array.shape}, the grid "
                f"{real_array.shape}"
            )
        return real_array * self.array.astype(real_array.dtype)
