"""Coordinate systems of voxel grids, in real and in Fourier space."""

from .frequency import (
    make_frequency_grid as make_frequency_grid,
    make_frequency_slice as make_frequency_slice,
    make_radial_frequency_grid as make_radial_frequency_grid,
)
from .grids import (
    as_grid_shape as as_grid_shape,
    make_coordinate_axis as make_coordinate_axis,
    make_coordinate_grid as make_coordinate_grid,
    make_radial_coordinate_grid as make_radial_coordinate_grid,
)


__all__ = [
    "as_grid_shape",
    "make_coordinate_axis",
    "make_coordinate_grid",
    "make_frequency_grid",
    "make_frequency_slice",
    "make_radial_coordinate_grid",
    "make_radial_frequency_grid",
]
