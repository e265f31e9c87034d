"""Tabulated electron scattering factors as Fourier operators, with a B-factor.

Both are functions of the wave vector `xi` (A^-1) in the convention of the spec,
`U(r) = F^-1[f](r)` with `F[f](xi) = int exp(2 pi i xi.r) f(r) d^3r`, and both return A.
They differ in their tabulated variable: Peng et al. (1996) tabulate against the
scattering vector `q = |xi| / 2`, Lobato & Van Dyck (2014) against `g = |xi|`; each class
converts, so the two agree to the accuracy of their fits.
"""

import jax.numpy as jnp
from jaxtyping import Array, Float

from .fourier_operators import AbstractRadialFourierOperator


def _parameters(a, b, owner: str) -> tuple[Float[Array, " n_terms"], Float[Array, " n_terms"]]:
    a, b = jnp.asarray(a), jnp.asarray(b)
    dtype = jnp.result_type(a, b, float)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(
            f"{owner}: `a` and `b` must both have shape (n_terms,); got {a.shape} and {b.shape}"
        )
    return a.astype(dtype), b.astype(dtype)


class PengScatteringFactor(AbstractRadialFourierOperator):
    """Peng et al. (1996): `f(xi) = sum_i a_i exp(-(b_i + B) |xi|^2 / 4)`.

    That is the tabulated `sum_i a_i exp(-b_i q^2)` at `q = |xi| / 2`, times the
    Debye-Waller factor `exp(-B q^2)` of an extra B-factor `B`.
    """

    a: Float[Array, " n_terms"]
    b: Float[Array, " n_terms"]
    b_factor: Float[Array, ""]

    def __init__(self, a, b, b_factor=0.0):
        """**Arguments:**

        - `a`: amplitudes in A, shape `(n_terms,)` (one row of
          `PengScatteringFactorParameters.a`).
        - `b`: in A^2, shape `(n_terms,)`.
        - `b_factor`: an extra B-factor in A^2 added to every `b_i`.
        """
        self.a, self.b = _parameters(a, b, "PengScatteringFactor")
        self.b_factor = jnp.asarray(b_factor, dtype=self.b.dtype)

    def evaluate_squared_magnitude(self, squared_magnitude: Float[Array, "..."]) -> Float[Array, "..."]:
        q2 = squared_magnitude[..., None] / 4.0
        return jnp.sum(self.a * jnp.exp(-(self.b + self.b_factor) * q2), axis=-1)


class LobatoScatteringFactor(AbstractRadialFourierOperator):
    """Lobato & Van Dyck (2014): `f(g) = sum_i a_i (2 + b_i g^2) / (1 + b_i g^2)^2`, `g = |xi|`.

    Times the Debye-Waller factor `exp(-B |xi|^2 / 4)` of an extra B-factor `B`, as for
    `PengScatteringFactor`. `f(0) = 2 sum_i a_i`.
    """

    a: Float[Array, " n_terms"]
    b: Float[Array, " n_terms"]
    b_factor: Float[Array, ""]

    def __init__(self, a, b, b_factor=0.0):
        """**Arguments:**

        - `a`: in A, shape `(n_terms,)` (one row of `LobatoScatteringFactorParameters.a`).
        - `b`: in A^2, shape `(n_terms,)`.
        - `b_factor`: an extra B-factor in A^2 (a Debye-Waller factor).
        """
        self.a, self.b = _parameters(a, b, "LobatoScatteringFactor")
        self.b_factor = jnp.asarray(b_factor, dtype=self.b.dtype)

    def evaluate_squared_magnitude(self, squared_magnitude: Float[Array, "..."]) -> Float[Array, "..."]:
        g2 = squared_magnitude
        bg2 = self.b * g2[..., None]
        terms = self.a * (2.0 + bg2) / (1.0 + bg2) ** 2
        return jnp.sum(terms, axis=-1) * jnp.exp(-0.25 * self.b_factor * g2)

