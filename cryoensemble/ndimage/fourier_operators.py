"""Functions of spatial frequency, composable and evaluated at run time.

An operator is called on frequency vectors `xi` (A^-1 when the grid is in A), the vector
components in the last axis, (x, y) or (x, y, z) as coordinate grids are, and returns one
value per vector. Operators compose with `+` and `*`, with each other or with numbers.
"""

import functools
import operator
from abc import abstractmethod

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, Inexact


def _as_float(value) -> Float[Array, "..."]:
    array = jnp.asarray(value)
    return array if jnp.issubdtype(array.dtype, jnp.inexact) else array.astype(float)


def squared_magnitude(frequencies: Float[Array, "... ndim"]) -> Float[Array, "..."]:
    """`|xi|^2` of frequency vectors whose components are in the last axis."""
    frequencies = jnp.asarray(frequencies)
    return jnp.sum(frequencies**2, axis=-1)


class AbstractFourierOperator(eqx.Module):
    """A function of frequency vectors, e.g. a scattering factor or a filter.

    Subclasses implement `__call__`, mapping `(..., ndim)` frequencies to `(...)` values.
    """

    @abstractmethod
    def __call__(self, frequencies: Float[Array, "... ndim"]) -> Inexact[Array, "..."]:
        """Evaluate at `frequencies`, components (x, y[, z]) in the last axis."""

    def __add__(self, other) -> "AbstractFourierOperator":
        return SumFourierOperator(self, _as_operator(other))

    def __radd__(self, other) -> "AbstractFourierOperator":
        return SumFourierOperator(_as_operator(other), self)

    def __mul__(self, other) -> "AbstractFourierOperator":
        return ProductFourierOperator(self, _as_operator(other))

    def __rmul__(self, other) -> "AbstractFourierOperator":
        return ProductFourierOperator(_as_operator(other), self)


def _as_operator(value) -> AbstractFourierOperator:
    return value if isinstance(value, AbstractFourierOperator) else FourierConstant(value)


class FourierConstant(AbstractFourierOperator):
    """A constant at every frequency."""

    value: Inexact[Array, "..."]

    def __init__(self, value=1.0):
        """**Arguments:**

        - `value`: the constant.
        """
        self.value = _as_float(value)

    def __call__(self, frequencies: Float[Array, "... ndim"]) -> Inexact[Array, "..."]:
        return jnp.broadcast_to(self.value, jnp.shape(frequencies)[:-1])


class SumFourierOperator(AbstractFourierOperator):
    """The sum of two operators."""

    left: AbstractFourierOperator
    right: AbstractFourierOperator

    def __call__(self, frequencies: Float[Array, "... ndim"]) -> Inexact[Array, "..."]:
        return self.left(frequencies) + self.right(frequencies)


class ProductFourierOperator(AbstractFourierOperator):
    """The product of two operators."""

    left: AbstractFourierOperator
    right: AbstractFourierOperator

    def __call__(self, frequencies: Float[Array, "... ndim"]) -> Inexact[Array, "..."]:
        return self.left(frequencies) * self.right(frequencies)


class AbstractRadialFourierOperator(AbstractFourierOperator):
    """An operator that depends on `|xi|` only, e.g. an isotropic scattering factor.

    Subclasses implement `evaluate_squared_magnitude`; renderers use it to evaluate on a
    table of the grid's distinct `|xi|^2` (shells) instead of every frequency vector.
    """

    @abstractmethod
    def evaluate_squared_magnitude(self, squared_magnitude: Float[Array, "..."]) -> Inexact[Array, "..."]:
        """Evaluate at `|xi|^2` (A^-2 for frequencies in A^-1)."""

    def __call__(self, frequencies: Float[Array, "... ndim"]) -> Inexact[Array, "..."]:
        return self.evaluate_squared_magnitude(squared_magnitude(frequencies))


class FourierGaussian(AbstractRadialFourierOperator):
    """A gaussian in frequency, `amplitude * exp(-b_factor |xi|^2 / 4)`.

    As the scattering factor of an atom (`IndependentAtomVolume`) this is the Fourier
    transform, in the convention `F[f](xi) = int exp(2 pi i xi.r) f(r) d^3r`, of a
    normalized 3D gaussian of variance `b_factor / (8 pi^2)` (A^2) scaled by `amplitude`
    (A): one term of Peng's `a exp(-b q^2)` with `q = |xi| / 2`.
    """

    amplitude: Float[Array, "..."]
    b_factor: Float[Array, "..."]

    def __init__(self, amplitude=1.0, b_factor=0.0):
        """**Arguments:**

        - `amplitude`: the value at zero frequency (A for a scattering factor).
        - `b_factor`: the B-factor in A^2 (`8 pi^2` times the real-space variance).
        """
        self.amplitude = _as_float(amplitude)
        self.b_factor = _as_float(b_factor)

    def evaluate_squared_magnitude(self, squared_magnitude: Float[Array, "..."]) -> Float[Array, "..."]:
        return self.amplitude * jnp.exp(-0.25 * self.b_factor * squared_magnitude)


class FourierSinc(AbstractFourierOperator):
    """The separable sinc, `prod_j sinc(xi_j w)` with `sinc(x) = sin(pi x) / (pi x)`.

    The Fourier transform of the box of width `w` normalized to unit integral: multiplying
    a spectrum by it averages the function over boxes of that width (a voxel's average).
    """

    box_width: Float[Array, ""]

    def __init__(self, box_width=1.0):
        """**Arguments:**

        - `box_width`: the width of the box, in the units of `1 / frequencies` (A).
        """
        self.box_width = _as_float(box_width)

    def __call__(self, frequencies: Float[Array, "... ndim"]) -> Float[Array, "..."]:
        frequencies = jnp.asarray(frequencies)
        return functools.reduce(
            operator.mul,
            [jnp.sinc(frequencies[..., j] * self.box_width) for j in range(frequencies.shape[-1])],
        )
