"""Frequency grids in A^-1 (cycles per A), for Fourier transforms of voxel grids.

For a grid of shape (nz, ny, nx) the last axis holds (xi_x, xi_y, xi_z), as coordinate
grids hold (x, y, z). Frequencies follow `numpy.fft.fftfreq` (zero frequency in the
corner) unless a function says it centres them.
"""

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float


def _axis_frequencies(n: int, is_half_axis: bool, centred: bool) -> np.ndarray:
    """Frequencies of one axis in cycles per voxel."""
    if is_half_axis:
        return np.fft.rfftfreq(n)
    frequencies = np.fft.fftfreq(n)
    return np.fft.fftshift(frequencies) if centred else frequencies


def _grid(shape, grid_spacing, outputs_rfft: bool, centred: bool) -> Float[Array, "... ndim"]:
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise ValueError(f"frequency grids are 2D or 3D with positive sizes; got shape {shape}")
    axes = [
        _axis_frequencies(n, outputs_rfft and j == len(shape) - 1, centred)
        for j, n in enumerate(shape)
    ]
    # Cycles per voxel, exact in float64, then scaled: a voxel size of 1 gives the
    # frequency in pixels (multiples of 1/n). Only the 1D axes are constants: under `jit`
    # the grid is built at run time, not embedded in the program.
    mesh = jnp.meshgrid(*[jnp.asarray(a) for a in axes], indexing="ij")
    grid = jnp.stack(mesh[::-1], axis=-1)
    return grid / jnp.asarray(grid_spacing, dtype=grid.dtype)


def make_frequency_grid(
    shape: tuple[int, ...], grid_spacing=1.0, outputs_rfftfreqs: bool = True
) -> Float[Array, "... ndim"]:
    """A grid of frequency vectors in A^-1, zero frequency in the corner.

    **Arguments:**

    - `shape`: the real-space shape, (ny, nx) or (nz, ny, nx).
    - `grid_spacing`: the pixel or voxel size in A (1: frequencies in cycles per voxel).
    - `outputs_rfftfreqs`: if `True`, the grid of `rfftn`: the last axis holds its
      `n // 2 + 1` non-negative frequencies.

    **Returns:**

    Shape `shape + (ndim,)` (last axis `n // 2 + 1` long for `outputs_rfft`), components
    (xi_x, xi_y[, xi_z]) in the last axis.
    """
    return _grid(shape, grid_spacing, outputs_rfftfreqs, centred=False)


def make_radial_frequency_grid(
    shape: tuple[int, ...], grid_spacing=1.0, outputs_rfftfreqs: bool = True
) -> Float[Array, "..."]:
    """`|xi|` in A^-1 on `make_frequency_grid(shape, grid_spacing, outputs_rfftfreqs)`."""
    return jnp.linalg.norm(make_frequency_grid(shape, grid_spacing, outputs_rfftfreqs), axis=-1)


def make_frequency_slice(
    shape: tuple[int, int], grid_spacing=1.0, outputs_rfftfreqs: bool = False
) -> Float[Array, "1 ny nx 3"]:
    """The central slice xi_z = 0 of a 3D frequency grid, zero frequency in the centre.

    The coordinate system of Fourier slice extraction: rotating it and interpolating a
    centred 3D spectrum on it gives the spectrum of a projection.

    **Arguments:**

    - `shape`: the image shape (ny, nx).
    - `grid_spacing`: the voxel size in A (1: frequencies in cycles per voxel, the
      `frequency_slice_in_pixels` of voxel volumes).
    - `outputs_rfftfreqs`: if `True`, only the non-negative xi_x (`nx // 2 + 1` of them, in
      the corner of that axis); the xi_y axis is centred either way.

    **Returns:**

    Shape `(1, ny, nx, 3)` (or `(1, ny, nx // 2 + 1, 3)`), holding (xi_x, xi_y, 0).
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2:
        raise ValueError(f"make_frequency_slice: shape must be (ny, nx); got {shape}")
    plane = _grid(shape, grid_spacing, outputs_rfftfreqs, centred=True)
    return jnp.concatenate([plane, jnp.zeros_like(plane[..., :1])], axis=-1)[None]
