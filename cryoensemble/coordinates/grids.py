"""Coordinate grids in A, with the cryojax centring: voxel i of an axis of length n sits
at (i - n // 2) * grid_spacing."""

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float


def make_coordinate_axis(n: int, grid_spacing: float = 1.0) -> Float[np.ndarray, " n"]:
    """Voxel-centre coordinates along one axis, in A."""
    return (np.arange(n) - n // 2) * float(grid_spacing)


def make_coordinate_grid(
    shape: tuple[int, ...], grid_spacing: float = 1.0
) -> Float[Array, "... ndim"]:
    """A grid of voxel-centre coordinates, shape `shape + (ndim,)`.

    For a volume of shape (nz, ny, nx) the last axis holds (x, y, z), as positions do.

    **Arguments:**

    - `shape`: (ny, nx) or (nz, ny, nx).
    - `grid_spacing`: the pixel or voxel size in A.
    """
    axes = [jnp.asarray(make_coordinate_axis(n, grid_spacing)) for n in shape]
    mesh = jnp.meshgrid(*axes, indexing="ij")
    return jnp.stack(mesh[::-1], axis=-1)


def make_radial_coordinate_grid(
    shape: tuple[int, ...], grid_spacing: float = 1.0
) -> Float[Array, "..."]:
    """The distance in A of every voxel centre from the origin voxel (`n // 2` per axis).

    **Arguments:**

    - `shape`: (ny, nx) or (nz, ny, nx).
    - `grid_spacing`: the pixel or voxel size in A.
    """
    return jnp.linalg.norm(make_coordinate_grid(shape, grid_spacing), axis=-1)
