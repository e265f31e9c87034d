"""Coordinate systems of voxel grids."""

from .grids import (
    make_coordinate_axis as make_coordinate_axis,
    make_coordinate_grid as make_coordinate_grid,
)


__all__ = ["make_coordinate_axis", "make_coordinate_grid"]
