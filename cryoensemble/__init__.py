"""cryoensemble: exact, fast scattering potentials of atomic models and their ensembles."""

from . import constants, coordinates, io, ndimage, simulator


__version__ = "0.1.0"

__all__ = ["constants", "coordinates", "io", "ndimage", "simulator"]
