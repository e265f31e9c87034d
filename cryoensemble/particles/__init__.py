"""Particle images: an ensemble to a labelled cryo-EM particle dataset (poses, CTF,
noise) in a zarr store or lazily in memory, and its export to RELION."""

from ._labels import (
    CTFDistribution as CTFDistribution,
    ParticleParameterError as ParticleParameterError,
    relion_angles as relion_angles,
)
from ._relion import export_relion as export_relion
from ._simulate import (
    ParticleStoreError as ParticleStoreError,
    open_particles as open_particles,
    repair_particles as repair_particles,
    simulate_images as simulate_images,
)


__all__ = [
    "CTFDistribution",
    "ParticleParameterError",
    "ParticleStoreError",
    "export_relion",
    "open_particles",
    "relion_angles",
    "repair_particles",
    "simulate_images",
]
