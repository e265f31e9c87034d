"""cryoensemble: exact, fast scattering potentials of atomic models and their ensembles.

Core (pure JAX): `simulator`, `constants`, `coordinates`, `ndimage`. Input: `io`,
`sources`. Distributed: `render_ensemble` (Dask) and `store` (xarray/zarr).
"""

from . import constants, coordinates, io, ndimage, simulator


__version__ = "0.1.0"


def render_ensemble(source, **kwargs):
    """Render an ensemble into a zarr store with Dask; see
    `cryoensemble.distributed.render_ensemble`."""
    from .distributed import render_ensemble as run

    return run(source, **kwargs)


def simulate_images(source, **kwargs):
    """Simulate a labelled particle-image dataset from an ensemble; see
    `cryoensemble.particles.simulate_images`."""
    from .particles import simulate_images as run

    return run(source, **kwargs)


__all__ = [
    "constants", "coordinates", "io", "ndimage", "render_ensemble", "simulate_images", "simulator",
]
