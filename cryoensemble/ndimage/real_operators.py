"""Functions of real-space position, composable like the Fourier operators.

An operator is called on a coordinate grid (A), components (x, y[, z]) in the last axis,
and returns one value per point.
"""

from abc import abstractmethod

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, Inexact


def _as_float(value) -> Float[Array, "..."]:
    array = jnp.asarray(value)
    return array if jnp.issubdtype(array.dtype, jnp.inexact) else array.astype(float)


class AbstractRealOperator(eqx.Module):
    """A function of positions; subclasses implement `__call__`."""

    @abstractmethod
    def __call__(self, coordinates: Float[Array, "... ndim"]) -> Inexact[Array, "..."]:
        """Evaluate at `coordinates`, components (x, y[, z]) in the last axis."""

    def __add__(self, other) -> "AbstractRealOperator":
        return SumRealOperator(self, _as_operator(other))

    def __radd__(self, other) -> "AbstractRealOperator":
        return SumRealOperator(_as_operator(other), self)

    def __sub__(self, other) -> "AbstractRealOperator":
        return SumRealOperator(self, ProductRealOperator(RealConstant(-1.0), _as_operator(other)))

    def __rsub__(self, other) -> "AbstractRealOperator":
        return SumRealOperator(_as_operator(other), ProductRealOperator(RealConstant(-1.0), self))

    def __mul__(self, other) -> "AbstractRealOperator":
        return ProductRealOperator(self, _as_operator(other))

    def __rmul__(self, other) -> "AbstractRealOperator":
        return ProductRealOperator(_as_operator(other), self)


def _as_operator(value) -> AbstractRealOperator:
    return value if isinstance(value, AbstractRealOperator) else RealConstant(value)


class RealConstant(AbstractRealOperator):
    """A constant everywhere."""

    value: Inexact[Array, "..."]

    def __init__(self, value=1.0):
        """**Arguments:**

        - `value`: the constant.
        """
        self.value = _as_float(value)

    def __call__(self, coordinates: Float[Array, "... ndim"]) -> Inexact[Array, "..."]:
        return jnp.broadcast_to(self.value, jnp.shape(coordinates)[:-1])


class SumRealOperator(AbstractRealOperator):
    """The sum of two operators."""

    left: AbstractRealOperator
    right: AbstractRealOperator

    def __call__(self, coordinates: Float[Array, "... ndim"]) -> Inexact[Array, "..."]:
        return self.left(coordinates) + self.right(coordinates)


class ProductRealOperator(AbstractRealOperator):
    """The product of two operators."""

    left: AbstractRealOperator
    right: AbstractRealOperator

    def __call__(self, coordinates: Float[Array, "... ndim"]) -> Inexact[Array, "..."]:
        return self.left(coordinates) * self.right(coordinates)


class RealGaussian(AbstractRealOperator):
    """A normalized isotropic gaussian, `amplitude N(r; offset, variance)` (2D or 3D)."""

    amplitude: Float[Array, ""]
    variance: Float[Array, ""]
    offset: Float[Array, " ndim"]

    def __init__(self, amplitude=1.0, variance=1.0, offset=(0.0, 0.0)):
        """**Arguments:**

        - `amplitude`: the integral of the gaussian.
        - `variance`: per axis, A^2.
        - `offset`: the centre (x, y[, z]), A.
        """
        self.amplitude = _as_float(amplitude)
        self.variance = _as_float(variance)
        self.offset = _as_float(offset)

    def __call__(self, coordinates: Float[Array, "... ndim"]) -> Float[Array, "..."]:
        coordinates = jnp.asarray(coordinates)
        ndim = coordinates.shape[-1]
        offset = jnp.zeros(ndim, self.offset.dtype).at[: self.offset.shape[0]].set(self.offset)
        r2 = jnp.sum((coordinates - offset) ** 2, axis=-1)
        norm = (2 * jnp.pi * self.variance) ** (ndim / 2)
        return self.amplitude * jnp.exp(-0.5 * r2 / self.variance) / norm
