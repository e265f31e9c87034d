"""A stochastic parametrization: a gaussian mixture whose positions jitter."""

import equinox as eqx
import jax
from jaxtyping import Array, Float, PRNGKeyArray

from .gaussian_mixture import GaussianMixtureVolume
from .base_volume import AbstractVolumeParametrization


class PositionJitteredVolume(AbstractVolumeParametrization):
    """A `GaussianMixtureVolume` whose positions get independent isotropic gaussian noise
    of standard deviation `jitter_in_angstroms` at each `to_representation(key)`.

    A simple model of thermal motion, and a stochastic ensemble to sample.
    """

    volume: GaussianMixtureVolume
    jitter_in_angstroms: Float[Array, ""]

    def __init__(self, volume: GaussianMixtureVolume, jitter_in_angstroms):
        """**Arguments:**

        - `volume`: the mean structure.
        - `jitter_in_angstroms`: the standard deviation of each coordinate's noise, A.
        """
        self.volume = volume
        self.jitter_in_angstroms = jax.numpy.asarray(jitter_in_angstroms, dtype=float)

    def to_representation(self, rng_key: PRNGKeyArray | None = None) -> GaussianMixtureVolume:
        """A sample (the mean structure when `rng_key` is None)."""
        if rng_key is None:
            return self.volume
        noise = jax.random.normal(rng_key, self.volume.positions.shape, self.volume.positions.dtype)
        return eqx.tree_at(
            lambda v: v.positions, self.volume,
            self.volume.positions + self.jitter_in_angstroms.astype(noise.dtype) * noise,
        )
