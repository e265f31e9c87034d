"""A volume of independent atoms: positions grouped by atom type, one scattering factor each."""

from collections.abc import Sequence
from typing import Self

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray, PyTree

from ...atom_util import split_atoms_by_element as split_atoms_by_element
from ...constants.scattering_factors import (
    LobatoScatteringFactorParameters,
    PengScatteringFactorParameters,
)
from ...ndimage.fourier_operators import AbstractFourierOperator
from ...ndimage.scattering_factors import LobatoScatteringFactor, PengScatteringFactor
from .._pose.pose import AbstractPose
from .base_volume import as_positions, AbstractAtomVolume


def _is_operator(x) -> bool:
    return isinstance(x, AbstractFourierOperator)


def _as_positions(array) -> Float[Array, "n 3"]:
    return as_positions(array, "IndependentAtomVolume: each leaf of `positions`", "n_atoms")


class IndependentAtomVolume(AbstractAtomVolume):
    """Atoms grouped by type, each type with its electron scattering factor.

    The potential is `U = F^-1[ sum_types f_type(xi) sum_(atoms of type) exp(2 pi i xi.r_n) ]`
    in the convention `F[f](xi) = int exp(2 pi i xi.r) f(r) d^3r`: every atom of a type
    carries the same scattering factor `f_type` (A), a Fourier operator. Peng factors are
    gaussians and Lobato factors are not, so this representation is rendered in Fourier
    space (`FFTAtomRenderFn`); per-atom B-factors need a `GaussianMixtureVolume`.

    `positions` and `scattering_factors` are pytrees of one structure (a tuple over atom
    types, typically), with `(n_atoms_of_type, 3)` arrays and `AbstractFourierOperator`s as
    their leaves.
    """

    positions: PyTree[Float[Array, "_ 3"]]
    scattering_factors: PyTree[AbstractFourierOperator]

    def __init__(self, positions, scattering_factors):
        """**Arguments:**

        - `positions`: a pytree of atom positions (x, y, z) in A, leaves `(n, 3)`.
        - `scattering_factors`: a pytree of the same structure as `positions` with an
          `AbstractFourierOperator` (a function of xi in A^-1, returning A) per leaf, e.g.
          `cryoensemble.ndimage.FourierGaussian(amplitude, b_factor)`.
        """
        factor_structure = jax.tree.structure(scattering_factors, is_leaf=_is_operator)
        if not all(_is_operator(f) for f in jax.tree.leaves(scattering_factors, is_leaf=_is_operator)):
            raise TypeError(
                "IndependentAtomVolume: every leaf of `scattering_factors` must be an "
                "AbstractFourierOperator (e.g. cryoensemble.ndimage.FourierGaussian)"
            )
        if jax.tree.structure(positions) != factor_structure:
            raise ValueError(
                "IndependentAtomVolume: `positions` and `scattering_factors` must have the "
                f"same pytree structure; got {jax.tree.structure(positions)} and "
                f"{factor_structure}"
            )
        self.positions = jax.tree.map(_as_positions, positions)
        self.scattering_factors = scattering_factors

    @classmethod
    def from_tabulated_parameters(
        cls,
        positions_by_element: tuple[Float[Array, "_ 3"], ...],
        parameters: PengScatteringFactorParameters | LobatoScatteringFactorParameters,
        *,
        b_factor_by_element=None,
    ) -> Self:
        """One scattering factor per element from Peng (1996) or Lobato (2014) tables.

        **Arguments:**

        - `positions_by_element`: a tuple of `(n_i, 3)` position arrays in A, one per
          element (see `split_atoms_by_element`).
        - `parameters`: `PengScatteringFactorParameters` or
          `LobatoScatteringFactorParameters` of those elements, one row per entry of
          `positions_by_element`.
        - `b_factor_by_element`: an extra B-factor in A^2, a scalar for all elements or a
          tuple with one per element (a Debye-Waller factor `exp(-B |xi|^2 / 4)`).
        """
        if isinstance(parameters, PengScatteringFactorParameters):
            factor_cls = PengScatteringFactor
        elif isinstance(parameters, LobatoScatteringFactorParameters):
            factor_cls = LobatoScatteringFactor
        else:
            raise TypeError(
                "IndependentAtomVolume.from_tabulated_parameters: `parameters` must be "
                "PengScatteringFactorParameters or LobatoScatteringFactorParameters; got "
                f"{type(parameters).__name__}"
            )
        positions_by_element = tuple(positions_by_element)
        n_elements = len(positions_by_element)
        if parameters.a.shape[0] != n_elements:
            raise ValueError(
                "IndependentAtomVolume.from_tabulated_parameters: parameters for "
                f"{parameters.a.shape[0]} elements but {n_elements} position arrays"
            )
        if b_factor_by_element is None:
            b_factors = (0.0,) * n_elements
        elif isinstance(b_factor_by_element, Sequence):
            if len(b_factor_by_element) != n_elements:
                raise ValueError(
                    "IndependentAtomVolume.from_tabulated_parameters: "
                    f"{len(b_factor_by_element)} B-factors for {n_elements} elements"
                )
            b_factors = tuple(b_factor_by_element)
        else:
            b_factors = (b_factor_by_element,) * n_elements
        factors = tuple(
            factor_cls(parameters.a[i], parameters.b[i], b_factors[i]) for i in range(n_elements)
        )
        return cls(positions_by_element, factors)

    def to_representation(self, rng_key: PRNGKeyArray | None = None) -> Self:
        """The identity: this is already a representation.

        **Arguments:**

        - `rng_key`: not used.
        """
        return self

    def rotate_to_pose(self, pose: AbstractPose, inverse: bool = False) -> Self:
        """Return the volume with every position rotated by the pose (`R^T` if `inverse`)."""
        rotate = lambda p: pose.rotate_coordinates(p, inverse=inverse).astype(p.dtype)  # noqa: E731
        return eqx.tree_at(lambda v: v.positions, self, jax.tree.map(rotate, self.positions))

    def translate_to_pose(self, pose: AbstractPose) -> Self:
        """Return the volume with every position translated by the pose's offset (A)."""
        offset = pose.offset_in_angstroms_3d
        shift = lambda p: p + offset.astype(p.dtype)  # noqa: E731
        return eqx.tree_at(lambda v: v.positions, self, jax.tree.map(shift, self.positions))
