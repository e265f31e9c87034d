"""Conversions between the conventions that describe a gaussian (cryojax names)."""

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float


def b_factor_to_variance(b_factor: Float[ArrayLike, "..."] | float) -> Float[Array, "..."]:
    """The variance (A^2) of the gaussian whose B-factor (A^2) is given:
    `sigma^2 = B / (8 pi^2)`.

    **Arguments:**

    - `b_factor`: the B-factor, A^2.

    **Returns:**

    The variance, A^2.
    """
    return jnp.asarray(b_factor_to_variance_numpy(b_factor))


def b_factor_to_variance_numpy(b_factor) -> np.ndarray:
    """`b_factor_to_variance` in NumPy (float64), for host-side planning that must not
    start a JAX backend (a Dask client on a GPU machine would take GPU memory)."""
    return np.asarray(b_factor, np.float64) / (8 * np.pi**2)


def variance_to_b_factor(variance: Float[ArrayLike, "..."] | float) -> Float[Array, "..."]:
    """The B-factor (A^2) of the gaussian whose variance (A^2) is given:
    `B = 8 pi^2 sigma^2`.

    **Arguments:**

    - `variance`: the variance, A^2.

    **Returns:**

    The B-factor, A^2.
    """
    return jnp.asarray(8 * np.pi**2 * variance)
