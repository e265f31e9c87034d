"""A volume as a mixture of isotropic gaussians, several per atom position."""

from typing import Self

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ...constants import PengScatteringFactorParameters, b_factor_to_variance
from .._pose.pose import AbstractPose
from .._volume_rendering.support_plan import ConcreteMixture
from .base_volume import AbstractAtomVolume, as_positions


def _per_gaussian(value, n_positions: int, name: str) -> Float[Array, "n_positions n_gaussians"]:
    """Broadcast a scalar, `(n,)` or `(n, g)` parameter to `(n, g)`."""
    array = jnp.asarray(value)
    if not jnp.issubdtype(array.dtype, jnp.floating):
        array = array.astype(float)
    if array.ndim == 0:
        return jnp.broadcast_to(array, (n_positions, 1))
    if array.ndim == 1 and array.shape[0] == n_positions:
        return array[:, None]
    if array.ndim == 2 and array.shape[0] == n_positions:
        return array
    raise ValueError(
        f"GaussianMixtureVolume: `{name}` must be a scalar, shape ({n_positions},) or "
        f"({n_positions}, n_gaussians); got shape {array.shape}"
    )


class GaussianMixtureVolume(AbstractAtomVolume):
    """A volume as a mixture of gaussians, with several gaussians per position.

    Following Peng et al. (1996), atom n contributes
    `sum_i amplitudes[n, i] N(r; positions[n], variances[n, i])` where N is a normalized
    3D isotropic gaussian: amplitudes are in A (so the volume integrates to the sum of
    amplitudes, in A^3 x A^-2) and variances in A^2 (`b / 8 pi^2` for Peng's b).
    """

    positions: Float[Array, "n_positions 3"]
    amplitudes: Float[Array, "n_positions n_gaussians"]
    variances: Float[Array, "n_positions n_gaussians"]
    concrete_mixture: ConcreteMixture | None = eqx.field(static=True)

    def __init__(self, positions, amplitudes, variances):
        """**Arguments:**

        - `positions`: gaussian centres (x, y, z) in A, shape `(n_positions, 3)`.
        - `amplitudes`: in A; a scalar, or shape `()`, `(n_positions,)` or
          `(n_positions, n_gaussians)`.
        - `variances`: in A^2; the same forms as `amplitudes`.
        """
        positions = as_positions(positions, "GaussianMixtureVolume: `positions`", "n_positions")
        n = positions.shape[0]
        amplitudes = _per_gaussian(amplitudes, n, "amplitudes")
        variances = _per_gaussian(variances, n, "variances")
        n_gaussians = max(amplitudes.shape[1], variances.shape[1])
        for name, array in (("amplitudes", amplitudes), ("variances", variances)):
            if array.shape[1] not in (1, n_gaussians):
                raise ValueError(
                    f"GaussianMixtureVolume: `amplitudes` has {amplitudes.shape[1]} "
                    f"gaussians per position but `variances` has {variances.shape[1]}"
                )
        dtype = jnp.result_type(positions, amplitudes, variances)
        self.positions = positions.astype(dtype)
        self.amplitudes = jnp.broadcast_to(amplitudes, (n, n_gaussians)).astype(dtype)
        self.variances = jnp.broadcast_to(variances, (n, n_gaussians)).astype(dtype)
        # Built outside jit, the volume keeps a host view of its mixture, so renderers can
        # size their windows even when it is later passed through jit (see support_plan).
        self.concrete_mixture = ConcreteMixture.of(self.amplitudes, self.variances)

    @classmethod
    def from_tabulated_parameters(
        cls,
        atom_positions: Float[Array, "n_atoms 3"],
        parameters: PengScatteringFactorParameters,
        extra_b_factors=None,
    ) -> Self:
        """Five gaussians per atom from Peng et al. (1996) parameters.

        **Arguments:**

        - `atom_positions`: (x, y, z) in A, shape `(n_atoms, 3)`.
        - `parameters`: `PengScatteringFactorParameters` for these atoms.
        - `extra_b_factors`: a B-factor in A^2 added to every `b` of an atom: a scalar
          or shape `(n_atoms,)`.
        """
        a, b = parameters.a, parameters.b
        n_atoms = jnp.shape(atom_positions)[0]
        if a.shape[0] != n_atoms:
            raise ValueError(
                f"GaussianMixtureVolume.from_tabulated_parameters: {n_atoms} positions but "
                f"parameters for {a.shape[0]} atoms"
            )
        if extra_b_factors is not None:
            extra = jnp.asarray(extra_b_factors)
            if extra.ndim not in (0, 1) or (extra.ndim == 1 and extra.shape[0] != n_atoms):
                raise ValueError(
                    "GaussianMixtureVolume.from_tabulated_parameters: `extra_b_factors` "
                    f"must be a scalar or shape ({n_atoms},); got {extra.shape}"
                )
            b = b + (extra if extra.ndim == 0 else extra[:, None])
        return cls(atom_positions, a, b_factor_to_variance(b))

    def to_representation(self, rng_key: PRNGKeyArray | None = None) -> Self:
        """The identity: this is already a representation."""
        return self

    def rotate_to_pose(self, pose: AbstractPose, inverse: bool = False) -> Self:
        """Return the volume with its positions rotated by the pose."""
        rotated = pose.rotate_coordinates(self.positions, inverse=inverse)
        return eqx.tree_at(lambda v: v.positions, self, rotated.astype(self.positions.dtype))

    def translate_to_pose(self, pose: AbstractPose) -> Self:
        """Return the volume with its positions translated by the pose's offset."""
        shifted = self.positions + pose.offset_in_angstroms_3d.astype(self.positions.dtype)
        return eqx.tree_at(lambda v: v.positions, self, shifted)
