"""Coordinate grids in A, with the cryojax centring: voxel i of an axis of length n sits
at (i - n // 2) * grid_spacing."""

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float


def as_grid_shape(shape, name: str = "shape") -> tuple[int, int, int]:
    """`N` or `(NZ, NY, NX)` (integers, or a string `"N"` / `"NZ,NY,NX"`) as a grid shape,
    or a one-line ValueError naming `name`: the one place grid shapes are read."""
    text = shape
    try:
        if isinstance(shape, str):
            shape = [int(p) for p in shape.split(",")]
        shape = tuple(shape) if np.ndim(shape) else (shape,)
        shape = shape * 3 if len(shape) == 1 else shape
        if len(shape) == 3 and all(float(s) == int(s) for s in shape):
            shape = tuple(int(s) for s in shape)
            if min(shape) >= 1:
                return shape
    except (TypeError, ValueError):
        pass
    raise ValueError(f"{name}: expected N or (NZ, NY, NX), positive integers; got {text!r}")


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
