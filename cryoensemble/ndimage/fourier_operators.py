"""Functions of spatial frequency, composable and evaluated at run time.

An operator is called on frequency vectors `xi` (A^-1 when the grid is in A), the vector
components in the last axis, (x, y) or (x, y, z) as coordinate grids are, and returns one
value per vector. Operators compose with `+`, `-` and `*`, with each other or with
numbers.
"""

import functools
import operator
from abc import abstractmethod
from collections.abc import Callable
from typing import Any

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

    def __sub__(self, other) -> "AbstractFourierOperator":
        return SumFourierOperator(self, ProductFourierOperator(FourierConstant(-1.0), _as_operator(other)))

    def __rsub__(self, other) -> "AbstractFourierOperator":
        return SumFourierOperator(_as_operator(other), ProductFourierOperator(FourierConstant(-1.0), self))

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

    def __init__(self, amplitude=1.0, b_factor=1.0):
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


class PeakedFourierGaussian(AbstractRadialFourierOperator):
    """A gaussian shell, `amplitude * exp(-b_factor (|xi| - radial_peak)^2 / 4)`."""

    amplitude: Float[Array, ""]
    b_factor: Float[Array, ""]
    radial_peak: Float[Array, ""]

    def __init__(self, amplitude=1.0, b_factor=1.0, radial_peak=0.0):
        """**Arguments:**

        - `amplitude`: the value on the shell.
        - `b_factor`: the width parameter in A^2.
        - `radial_peak`: the radius of the shell, A^-1.
        """
        self.amplitude = _as_float(amplitude)
        self.b_factor = _as_float(b_factor)
        self.radial_peak = _as_float(radial_peak)

    def evaluate_squared_magnitude(self, squared_magnitude: Float[Array, "..."]) -> Float[Array, "..."]:
        k = jnp.sqrt(squared_magnitude)
        return self.amplitude * jnp.exp(-0.25 * self.b_factor * (k - self.radial_peak) ** 2)


class FourierExp2D(AbstractRadialFourierOperator):
    """The 2D Fourier transform of `kappa / (2 pi xi^2) exp(-|r| / xi)`:
    `kappa / (2 pi xi^3) (xi^-2 + |k|^2)^(-3/2)` (amplitude kappa, length_scale xi in A)."""

    amplitude: Float[Array, ""]
    length_scale: Float[Array, ""]

    def __init__(self, amplitude=1.0, length_scale=1.0):
        """**Arguments:**

        - `amplitude`: the scale factor kappa.
        - `length_scale`: the decay length xi, A (positive).
        """
        self.amplitude = _as_float(amplitude)
        self.length_scale = _as_float(length_scale)

    def evaluate_squared_magnitude(self, squared_magnitude: Float[Array, "..."]) -> Float[Array, "..."]:
        xi = self.length_scale
        return self.amplitude / (2 * jnp.pi * xi**3) / (squared_magnitude + xi**-2) ** 1.5


class FourierDC(AbstractFourierOperator):
    """`value` at the zero frequency (the corner of an unshifted grid), zero elsewhere."""

    value: Float[Array, ""]

    def __init__(self, value=0.0):
        """**Arguments:**

        - `value`: the value at zero frequency.
        """
        self.value = _as_float(value)

    def __call__(self, frequencies: Float[Array, "... ndim"]) -> Float[Array, "..."]:
        zeros = jnp.zeros(jnp.shape(frequencies)[:-1], self.value.dtype)
        return zeros.at[(0,) * zeros.ndim].set(self.value)


class CustomFourierOperator(AbstractFourierOperator):
    """Any function `fn(frequencies, *args, **kwargs)` as an operator."""

    fn: Callable[..., Inexact[Array, "..."]] = eqx.field(static=True)
    args: Any
    kwargs: Any

    def __init__(self, fn: Callable[..., Inexact[Array, "..."]], *args: Any, **kwargs: Any):
        """**Arguments:**

        - `fn`: called as `fn(frequencies, *args, **kwargs)`.
        - `args`, `kwargs`: its parameters (pytrees: they are traced and differentiated).
        """
        self.fn = fn
        self.args = args
        self.kwargs = kwargs

    def __call__(self, frequencies: Float[Array, "... ndim"]) -> Inexact[Array, "..."]:
        return self.fn(frequencies, *self.args, **self.kwargs)
