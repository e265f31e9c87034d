"""The volume interface: parametrizations, representations and atom volumes.

Volumes ("scattering potentials") are in units of A^-2: the rescaled potential
U = m0 e V / (2 pi hbar^2) whose Fourier transform is the electron scattering factor.
"""

from abc import abstractmethod
from typing import Self

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._pose.pose import AbstractPose


class AbstractVolumeParametrization(eqx.Module):
    """A parametrization of a volume, mapped to a representation for imaging.

    Implement this when how a volume is parametrized for analysis (an ensemble, a
    stochastic model) differs from how it is represented for rendering.
    """

    @abstractmethod
    def to_representation(
        self, rng_key: PRNGKeyArray | None = None
    ) -> "AbstractVolumeRepresentation":
        """Compute the representation used for rendering.

        **Arguments:**

        - `rng_key`: an optional key, for stochastic parametrizations.
        """


    def get_representation(
        self, rng_key: PRNGKeyArray | None = None
    ) -> "AbstractVolumeRepresentation":
        """cryojax 0.6's name for `to_representation`.

        **Arguments:**

        - `rng_key`: an optional key, for stochastic parametrizations.
        """
        return self.to_representation(rng_key)


class AbstractVolumeRepresentation(AbstractVolumeParametrization):
    """A concrete representation of a volume: atoms, voxels, ..."""

    @abstractmethod
    def rotate_to_pose(self, pose: AbstractPose, inverse: bool = False) -> Self:
        """Rotate the coordinate system of the volume by `pose` (`R^T` if `inverse`)."""


class AbstractAtomVolume(AbstractVolumeRepresentation):
    """A volume represented as a point cloud of atoms."""

    @abstractmethod
    def translate_to_pose(self, pose: AbstractPose) -> Self:
        """Translate the atoms by the pose's offset (A)."""


def as_positions(array, what: str, rows: str = "n") -> Float[Array, "n 3"]:
    """Atom positions as a floating (n, 3) array, or a ValueError naming `what`."""
    array = jnp.asarray(array)
    if not jnp.issubdtype(array.dtype, jnp.floating):
        array = array.astype(float)
    if array.ndim != 2 or array.shape[1] != 3:
        raise ValueError(f"{what} must have shape ({rows}, 3); got {array.shape}")
    return array
