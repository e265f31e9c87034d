"""Volumes on voxel grids: a centred spectrum, its spline coefficients, or real-space voxels.

Conventions (cryojax's): real-space grids are indexed [z, y, x] with voxel `n // 2` of
each axis at the origin; Fourier-space grids hold `fftshift(fftn(ifftshift(grid)))`, the
spectrum with its phases taken about that origin voxel and the zero frequency at the
centre of the box (index `n // 2`). Coordinates and frequencies are in pixels (voxels and
cycles per voxel): the voxel size is the caller's, passed to whatever images the volume,
and recorded nowhere here.

Rotations follow the atom volumes': `volume.rotate_to_pose(pose)` images like atoms whose
positions were rotated by the pose's `R`, so the coordinate system that samples the
volume (frequency slice or coordinate grid) turns by `R^T`.
"""

from abc import abstractmethod
from typing import Self

import equinox as eqx
import jax.numpy as jnp
from jax.scipy.ndimage import map_coordinates
from jaxtyping import Array, Complex, Float, PRNGKeyArray

from ...coordinates.frequency import make_frequency_slice
from ...coordinates.grids import make_coordinate_grid
from ...ndimage.edges import crop_to_shape, pad_to_shape
from ...ndimage.masks import SincCorrectionMask
from ...ndimage.splines import compute_spline_coefficients
from .._pose.pose import AbstractPose
from .base_volume import AbstractVolumeRepresentation


def _real_cube(real_voxel_grid, owner: str) -> Float[Array, "dim dim dim"]:
    grid = jnp.asarray(real_voxel_grid)
    if not jnp.issubdtype(grid.dtype, jnp.floating):
        grid = grid.astype(float)
    if grid.ndim != 3 or len(set(grid.shape)) != 1:
        raise ValueError(f"{owner}: needs a cubic real voxel grid; got shape {grid.shape}")
    return grid


def _padded_spectrum(
    real_voxel_grid, pad_scale: float, pad_mode: str, sinc_correction: bool, owner: str
) -> Complex[Array, "dim dim dim"]:
    """The centred spectrum of a (padded, optionally sinc-corrected) cubic grid."""
    grid = _real_cube(real_voxel_grid, owner)
    if not pad_scale >= 1.0:
        raise ValueError(f"{owner}: pad_scale must be >= 1; got {pad_scale}")
    dim = int(grid.shape[0] * pad_scale)
    grid = pad_to_shape(grid, (dim,) * 3, mode=pad_mode)
    if sinc_correction:
        # After padding: the attenuation depends on the size of the transform.
        grid = SincCorrectionMask(grid.shape)(grid)
    return jnp.fft.fftshift(jnp.fft.fftn(jnp.fft.ifftshift(grid)))


def _check_slice(frequency_slice_in_pixels, dim: int, owner: str) -> Float[Array, "1 dim dim 3"]:
    frequency_slice = jnp.asarray(frequency_slice_in_pixels)
    if frequency_slice.shape != (1, dim, dim, 3):
        raise ValueError(
            f"{owner}: frequency_slice_in_pixels must have shape {(1, dim, dim, 3)} (a full "
            f"central slice of the {dim}^3 grid); got {frequency_slice.shape}"
        )
    return frequency_slice


class AbstractVoxelVolume(AbstractVolumeRepresentation):
    """A volume represented on voxels.

    The voxel size is not stored: pass the one the grid was made with to whatever
    images the volume (e.g. `FourierSliceExtraction(voxel_size)`).
    """

    @property
    @abstractmethod
    def shape(self) -> tuple[int, int, int]:
        """The shape of the voxel grid in real space."""

    def to_representation(self, rng_key: PRNGKeyArray | None = None) -> Self:
        """The identity: this is already a representation.

        **Arguments:**

        - `rng_key`: not used.
        """
        return self


def _with_rotated_slice(volume, pose: AbstractPose, inverse: bool):
    """A Fourier voxel volume with its frequency slice rotated by `R^T` (`R` if
    `inverse`): the central-slice theorem images the volume as if rotated by `R`."""
    rotated = pose.rotate_coordinates(volume.frequency_slice_in_pixels, inverse=not inverse)
    return eqx.tree_at(
        lambda v: v.frequency_slice_in_pixels,
        volume,
        rotated.astype(volume.frequency_slice_in_pixels.dtype),
    )


class FourierVoxelGridVolume(AbstractVoxelVolume):
    """A cubic voxel grid in Fourier space, zero frequency at the centre of the box.

    Imaged by `FourierSliceExtraction`, which interpolates it linearly on the (rotated)
    `frequency_slice_in_pixels`.
    """

    fourier_voxel_grid: Complex[Array, "dim dim dim"]
    frequency_slice_in_pixels: Float[Array, "1 dim dim 3"]

    def __init__(self, fourier_voxel_grid, frequency_slice_in_pixels):
        """**Arguments:**

        - `fourier_voxel_grid`: the centred spectrum,
          `fftshift(fftn(ifftshift(real_voxel_grid)))`, of a cubic grid.
        - `frequency_slice_in_pixels`: the central slice in cycles per voxel,
          `make_frequency_slice((dim, dim), outputs_rfftfreqs=False)`.
        """
        grid = jnp.asarray(fourier_voxel_grid)
        if grid.ndim != 3 or len(set(grid.shape)) != 1:
            raise ValueError(
                f"FourierVoxelGridVolume: fourier_voxel_grid must be cubic; got {grid.shape}"
            )
        self.fourier_voxel_grid = grid.astype(jnp.result_type(grid, jnp.complex64))
        self.frequency_slice_in_pixels = _check_slice(
            frequency_slice_in_pixels, grid.shape[0], "FourierVoxelGridVolume"
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        """The shape of `fourier_voxel_grid` (that of the padded real grid)."""
        return tuple(self.fourier_voxel_grid.shape)

    @classmethod
    def from_real_voxel_grid(
        cls,
        real_voxel_grid: Float[Array, "dim dim dim"],
        *,
        sinc_correction: bool = False,
        pad_scale: float = 1.0,
        pad_mode: str = "constant",
    ) -> Self:
        """Load from a real-valued cubic voxel grid.

        **Arguments:**

        - `real_voxel_grid`: the grid, indexed [z, y, x].
        - `sinc_correction`: if `True`, divide the (padded) grid by a
          `cryoensemble.ndimage.SincCorrectionMask`, undoing the attenuation of linear
          interpolation by `FourierSliceExtraction`.
        - `pad_scale`: pad the grid to `int(dim * pad_scale)` voxels per axis before the
          transform (>= 1): a finer spectrum, interpolated more accurately.
        - `pad_mode`: the padding mode, as for `jax.numpy.pad`.
        """
        spectrum = _padded_spectrum(
            real_voxel_grid, pad_scale, pad_mode, sinc_correction, "FourierVoxelGridVolume"
        )
        dim = spectrum.shape[0]
        frequency_slice = make_frequency_slice((dim, dim), outputs_rfftfreqs=False)
        return cls(spectrum, frequency_slice.astype(spectrum.real.dtype))

    def rotate_to_pose(self, pose: AbstractPose, inverse: bool = False) -> Self:
        """Return the volume with `frequency_slice_in_pixels` rotated by `R^T` (`R` if
        `inverse`), so that it images like atoms rotated by `R`."""
        return _with_rotated_slice(self, pose, inverse)


class FourierVoxelSplineVolume(AbstractVoxelVolume):
    """A cubic voxel grid in Fourier space, as cubic B-spline coefficients.

    The coefficients are those of the centred spectrum
    (`cryoensemble.ndimage.compute_spline_coefficients`), one extra per axis end;
    `FourierSliceExtraction` evaluates the spline on the (rotated) slice.
    """

    spline_coefficients: Complex[Array, "coeff_dim coeff_dim coeff_dim"]
    frequency_slice_in_pixels: Float[Array, "1 dim dim 3"]

    def __init__(self, spline_coefficients, frequency_slice_in_pixels):
        """**Arguments:**

        - `spline_coefficients`: from `compute_spline_coefficients(fourier_voxel_grid)`
          of a centred spectrum of shape `(dim,) * 3`: shape `(dim + 2,) * 3`.
        - `frequency_slice_in_pixels`: `make_frequency_slice((dim, dim),
          outputs_rfft=False)`.
        """
        coefficients = jnp.asarray(spline_coefficients)
        if coefficients.ndim != 3 or len(set(coefficients.shape)) != 1:
            raise ValueError(
                "FourierVoxelSplineVolume: spline_coefficients must be cubic; got "
                f"{coefficients.shape}"
            )
        self.spline_coefficients = coefficients.astype(
            jnp.result_type(coefficients, jnp.complex64)
        )
        self.frequency_slice_in_pixels = _check_slice(
            frequency_slice_in_pixels, coefficients.shape[0] - 2, "FourierVoxelSplineVolume"
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        """The shape of the spectrum the coefficients were computed from."""
        return tuple(s - 2 for s in self.spline_coefficients.shape)

    @classmethod
    def from_real_voxel_grid(
        cls,
        real_voxel_grid: Float[Array, "dim dim dim"],
        *,
        pad_scale: float = 1.0,
        pad_mode: str = "constant",
    ) -> Self:
        """Load from a real-valued cubic voxel grid.

        **Arguments:**

        - `real_voxel_grid`: the grid, indexed [z, y, x].
        - `pad_scale`: pad the grid to `int(dim * pad_scale)` voxels per axis before the
          transform (>= 1).
        - `pad_mode`: the padding mode, as for `jax.numpy.pad`.
        """
        spectrum = _padded_spectrum(
            real_voxel_grid, pad_scale, pad_mode, False, "FourierVoxelSplineVolume"
        )
        dim = spectrum.shape[0]
        frequency_slice = make_frequency_slice((dim, dim), outputs_rfftfreqs=False)
        return cls(
            compute_spline_coefficients(spectrum), frequency_slice.astype(spectrum.real.dtype)
        )

    def rotate_to_pose(self, pose: AbstractPose, inverse: bool = False) -> Self:
        """Return the volume with `frequency_slice_in_pixels` rotated by `R^T` (`R` if
        `inverse`), so that it images like atoms rotated by `R`."""
        return _with_rotated_slice(self, pose, inverse)


class RealVoxelGridVolume(AbstractVoxelVolume):
    """A voxel grid in real space, with the coordinates (in voxels) at which it is sampled.

    `coordinate_grid_in_pixels[z, y, x]` is the point (x, y, z), in voxels from the
    origin voxel, whose value output voxel [z, y, x] takes: the grid's own voxel centres
    until a pose rotates them. `sample_voxel_grid` reads the volume there.
    """

    real_voxel_grid: Float[Array, "nz ny nx"]
    coordinate_grid_in_pixels: Float[Array, "nz ny nx 3"]

    def __init__(self, real_voxel_grid, coordinate_grid_in_pixels):
        """**Arguments:**

        - `real_voxel_grid`: the voxel grid, indexed [z, y, x].
        - `coordinate_grid_in_pixels`: (x, y, z) in voxels, shape `(nz, ny, nx, 3)`,
          e.g. `make_coordinate_grid(real_voxel_grid.shape)`.
        """
        grid = jnp.asarray(real_voxel_grid)
        if not jnp.issubdtype(grid.dtype, jnp.floating):
            grid = grid.astype(float)
        if grid.ndim != 3:
            raise ValueError(f"RealVoxelGridVolume: needs a 3D grid; got shape {grid.shape}")
        coordinates = jnp.asarray(coordinate_grid_in_pixels)
        if coordinates.ndim != 4 or coordinates.shape[-1] != 3:
            raise ValueError(
                "RealVoxelGridVolume: coordinate_grid_in_pixels must have shape "
                f"(nz, ny, nx, 3); got {coordinates.shape}"
            )
        self.real_voxel_grid = grid
        self.coordinate_grid_in_pixels = coordinates.astype(grid.dtype)

    @property
    def shape(self) -> tuple[int, int, int]:
        """The shape of `real_voxel_grid`."""
        return tuple(self.real_voxel_grid.shape)

    @classmethod
    def from_real_voxel_grid(
        cls,
        real_voxel_grid: Float[Array, "nz ny nx"],
        *,
        coordinate_grid_in_pixels: Float[Array, "nz ny nx 3"] | None = None,
        crop_scale: float | None = None,
    ) -> Self:
        """Load from a real-valued voxel grid.

        **Arguments:**

        - `real_voxel_grid`: the grid, indexed [z, y, x].
        - `coordinate_grid_in_pixels`: the sampling coordinates; by default the voxel
          centres of the (cropped) grid, `make_coordinate_grid(shape)`.
        - `crop_scale`: crop each axis to `int(n / crop_scale)` voxels about the origin
          voxel (>= 1), e.g. to drop empty margins.
        """
        grid = jnp.asarray(real_voxel_grid)
        if crop_scale is not None:
            if not crop_scale >= 1.0:
                raise ValueError(f"RealVoxelGridVolume: crop_scale must be >= 1; got {crop_scale}")
            grid = crop_to_shape(grid, tuple(int(n / crop_scale) for n in grid.shape))
        if coordinate_grid_in_pixels is None:
            coordinate_grid_in_pixels = make_coordinate_grid(grid.shape)
        return cls(grid, coordinate_grid_in_pixels)

    def rotate_to_pose(self, pose: AbstractPose, inverse: bool = False) -> Self:
        """Return the volume with `coordinate_grid_in_pixels` rotated by `R^T` (`R` if
        `inverse`), so that it images like atoms rotated by `R`."""
        rotated = pose.rotate_coordinates(self.coordinate_grid_in_pixels, inverse=not inverse)
        return eqx.tree_at(
            lambda v: v.coordinate_grid_in_pixels,
            self,
            rotated.astype(self.coordinate_grid_in_pixels.dtype),
        )

    def sample_voxel_grid(self) -> Float[Array, "nz ny nx"]:
        """The volume at `coordinate_grid_in_pixels`, by trilinear interpolation (zero
        outside the grid): the rotated voxel grid after `rotate_to_pose`."""
        origin = jnp.asarray([n // 2 for n in self.shape], self.real_voxel_grid.dtype)
        indices = self.coordinate_grid_in_pixels[..., ::-1] + origin  # (x, y, z) -> [z, y, x]
        return map_coordinates(
            self.real_voxel_grid,
            [indices[..., j] for j in range(3)],
            order=1,
            mode="constant",
            cval=0.0,
        )


class RealVoxelCloudVolume(AbstractVoxelVolume):
    """Voxels as a point cloud: a weight (the voxel's value) at each voxel's coordinates.

    `RealVoxelProjection` projects it with a type-1 NUFFT. Unlike the grid volumes its
    points turn with the atoms': `rotate_to_pose` rotates them by the pose's `R`.
    """

    weights: Float[Array, " n_voxels"]
    coordinate_list_in_pixels: Float[Array, "n_voxels 3"]
    box_dim: int = eqx.field(static=True)

    def __init__(self, weights, coordinate_list_in_pixels, box_dim: int):
        """**Arguments:**

        - `weights`: the voxel values, shape `(n_voxels,)`.
        - `coordinate_list_in_pixels`: (x, y, z) of each voxel in voxels from the origin
          voxel, shape `(n_voxels, 3)`.
        - `box_dim`: the side of the cubic grid the voxels came from.
        """
        weights = jnp.asarray(weights)
        if not jnp.issubdtype(weights.dtype, jnp.floating):
            weights = weights.astype(float)
        coordinates = jnp.asarray(coordinate_list_in_pixels, dtype=weights.dtype)
        if weights.ndim != 1 or coordinates.shape != (weights.shape[0], 3):
            raise ValueError(
                "RealVoxelCloudVolume: weights must be (n_voxels,) and "
                f"coordinate_list_in_pixels (n_voxels, 3); got {weights.shape} and "
                f"{coordinates.shape}"
            )
        self.weights = weights
        self.coordinate_list_in_pixels = coordinates
        self.box_dim = int(box_dim)

    @property
    def shape(self) -> tuple[int, int, int]:
        """`(box_dim,) * 3`."""
        return (self.box_dim,) * 3

    @classmethod
    def from_real_voxel_grid(
        cls,
        real_voxel_grid: Float[Array, "dim dim dim"],
        *,
        coordinate_grid_in_pixels: Float[Array, "dim dim dim 3"] | None = None,
        crop_scale: float | None = None,
    ) -> Self:
        """Load from a real-valued cubic voxel grid (see
        `RealVoxelGridVolume.from_real_voxel_grid` for the arguments)."""
        grid_volume = RealVoxelGridVolume.from_real_voxel_grid(
            real_voxel_grid, coordinate_grid_in_pixels=coordinate_grid_in_pixels, crop_scale=crop_scale
        )
        shape = grid_volume.shape
        if len(set(shape)) != 1:
            raise ValueError(f"RealVoxelCloudVolume: needs a cubic real voxel grid; got shape {shape}")
        return cls(
            grid_volume.real_voxel_grid.ravel(),
            grid_volume.coordinate_grid_in_pixels.reshape(-1, 3),
            shape[0],
        )

    def rotate_to_pose(self, pose: AbstractPose, inverse: bool = False) -> Self:
        """Return the volume with its points rotated by `R` (`R^T` if `inverse`)."""
        rotated = pose.rotate_coordinates(self.coordinate_list_in_pixels, inverse=inverse)
        return eqx.tree_at(
            lambda v: v.coordinate_list_in_pixels,
            self,
            rotated.astype(self.coordinate_list_in_pixels.dtype),
        )
