"""Projections of volumes along z: 2D images of line integrals of the potential (A^-1).

An image pixel j of an axis of length n sits at (j - n // 2) * pixel_size, as voxels do,
and rotated volumes (`volume.rotate_to_pose(pose)`) project as the rotated object.

- `FourierSliceExtraction`: the Fourier projection-slice theorem on a voxel volume in
  Fourier space: the image's spectrum is the volume's spectrum on the (rotated) central
  slice, interpolated linearly (`FourierVoxelGridVolume`) or by cubic B-spline
  (`FourierVoxelSplineVolume`).
- `GaussianMixtureProjection`: exact line integrals of a `GaussianMixtureVolume` (a 2D
  gaussian mixture), averaged over each pixel with error functions: the reference the
  voxel routes are checked against.
- `RealVoxelProjection`: a `RealVoxelGridVolume` resampled on its (rotated) coordinate
  grid and summed along z.
"""

from abc import abstractmethod
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.scipy.ndimage import map_coordinates
from jaxtyping import Array, Float, Inexact

from ...ndimage.edges import resize_with_crop_or_pad
from ...ndimage.splines import evaluate_spline
from .._volume.gaussian_mixture import GaussianMixtureVolume
from .._volume.base_volume import AbstractVolumeRepresentation
from .._volume.voxel_volumes import FourierVoxelGridVolume, FourierVoxelSplineVolume, RealVoxelGridVolume


def _image_shape(shape, owner: str) -> tuple[int, int] | None:
    if shape is None:
        return None
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"{owner}: shape must be two positive integers (ny, nx); got {shape}")
    return shape


def _to_requested_space(image: Float[Array, "ny nx"], outputs_real_space: bool):
    return image if outputs_real_space else jnp.fft.rfftn(image)


class AbstractVolumeIntegrator(eqx.Module, strict=True):
    """Projects a volume representation along z onto an image."""

    @abstractmethod
    def __call__(
        self, volume_representation: AbstractVolumeRepresentation, *, outputs_real_space: bool = True
    ) -> Inexact[Array, "ny nx"]:
        """The projection of the volume, in A^-1.

        **Arguments:**

        - `volume_representation`: the (rotated) volume.
        - `outputs_real_space`: if `True`, the image; otherwise its `rfftn` (zero
          frequency in the corner).
        """


class FourierSliceExtraction(AbstractVolumeIntegrator, strict=True):
    """Project a Fourier-space voxel volume by the Fourier projection-slice theorem.

    The image's centred spectrum is the volume's spectrum on its
    `frequency_slice_in_pixels` (rotated by `rotate_to_pose`): interpolated linearly for a
    `FourierVoxelGridVolume` (zero outside the box), evaluated as a cubic B-spline for a
    `FourierVoxelSplineVolume`. At the identity pose the slice falls on grid points and
    the image is the grid summed along z, times the voxel size. Linear interpolation
    darkens the image towards the box edges unless the volume was made with
    `sinc_correction=True`; padding (`pad_scale`) and splines cut the remaining error.
    """

    voxel_size: Float[Array, ""]
    shape: tuple[int, int] | None = eqx.field(static=True)

    def __init__(self, voxel_size=1.0, *, shape: tuple[int, int] | None = None):
        """**Arguments:**

        - `voxel_size`: the voxel size of the volume's grid in A (the image's pixel size);
          the sum along z is multiplied by it to give line integrals.
        - `shape`: crop or pad the image to (ny, nx) about its centre pixel, e.g. to the
          unpadded box of a volume made with `pad_scale > 1`. Default: the volume's size.
        """
        self.voxel_size = jnp.asarray(voxel_size, dtype=float)
        self.shape = _image_shape(shape, "FourierSliceExtraction")

    def __call__(
        self,
        volume_representation: FourierVoxelGridVolume | FourierVoxelSplineVolume,
        *,
        outputs_real_space: bool = True,
    ) -> Inexact[Array, "ny nx"]:
        """Project the volume; see `AbstractVolumeIntegrator.__call__`."""
        volume = volume_representation
        if not isinstance(volume, (FourierVoxelGridVolume, FourierVoxelSplineVolume)):
            raise TypeError(
                "FourierSliceExtraction projects a FourierVoxelGridVolume or a "
                f"FourierVoxelSplineVolume; got {type(volume).__name__}"
            )
        return _extract(self, volume, outputs_real_space)

    def _project(self, volume, outputs_real_space: bool):
        frequency_slice = volume.frequency_slice_in_pixels[0]
        dim = frequency_slice.shape[0]
        # Cycles per voxel to indices of the centred spectrum, (x, y, z) -> [z, y, x].
        indices = frequency_slice[..., ::-1] * dim + dim // 2
        coordinates = [indices[..., j] for j in range(3)]
        if isinstance(volume, FourierVoxelGridVolume):
            spectrum = map_coordinates(
                volume.fourier_voxel_grid, coordinates, order=1, mode="constant", cval=0.0
            )
        else:
            spectrum = evaluate_spline(volume.spline_coefficients, tuple(coordinates))
        # The real part: interpolation near the unpaired Nyquist edge is not exactly
        # Hermitian.
        image = jnp.fft.fftshift(jnp.fft.ifftn(jnp.fft.ifftshift(spectrum))).real
        image = image * self.voxel_size.astype(image.dtype)
        if self.shape is not None:
            image = resize_with_crop_or_pad(image, self.shape)
        return _to_requested_space(image, outputs_real_space)


# Compiled once per volume type and size: the spline's 64 gathers dispatched one by one
# cost more than the whole projection.
@eqx.filter_jit
def _extract(integrator: FourierSliceExtraction, volume, outputs_real_space: bool):
    return integrator._project(volume, outputs_real_space)


class GaussianMixtureProjection(AbstractVolumeIntegrator, strict=True):
    """Exact projections of a `GaussianMixtureVolume` along z.

    The line integral of a normalized 3D gaussian is the 2D gaussian of the same
    variance, so the image is `sum a N2((x, y); (p_x, p_y), s^2)`; with
    `sampling_mode='average'` each pixel holds its average over the pixel,
    `a / d^2 prod_(x, y) [erf((x_j - p + d/2) / (sqrt(2) s)) - erf((x_j - p - d/2) /
    (sqrt(2) s))] / 2`, and with `'point'` its value at the pixel centre.
    """

    shape: tuple[int, int] = eqx.field(static=True)
    pixel_size: Float[Array, ""]
    sampling_mode: Literal["average", "point"] = eqx.field(static=True)

    def __init__(
        self,
        shape: tuple[int, int],
        pixel_size,
        *,
        sampling_mode: Literal["average", "point"] = "average",
    ):
        """**Arguments:**

        - `shape`: the image shape (ny, nx).
        - `pixel_size`: in A.
        - `sampling_mode`: `'average'` (pixel averages) or `'point'` (pixel centres).
        """
        self.shape = _image_shape(shape, "GaussianMixtureProjection")
        if sampling_mode not in ("average", "point"):
            raise ValueError(
                "GaussianMixtureProjection: sampling_mode must be 'average' or 'point'; got "
                f"{sampling_mode!r}"
            )
        self.pixel_size = jnp.asarray(pixel_size, dtype=float)
        self.sampling_mode = sampling_mode

    def __call__(
        self, volume_representation: GaussianMixtureVolume, *, outputs_real_space: bool = True
    ) -> Inexact[Array, "ny nx"]:
        """Project the volume; see `AbstractVolumeIntegrator.__call__`."""
        volume = volume_representation
        if not isinstance(volume, GaussianMixtureVolume):
            raise TypeError(
                f"GaussianMixtureProjection projects a GaussianMixtureVolume; got "
                f"{type(volume).__name__}"
            )
        dtype = volume.positions.dtype
        d = self.pixel_size.astype(dtype)
        sigma = jnp.sqrt(volume.variances)[..., None]  # (n, g, 1)

        def profile(n: int, centre: Float[Array, " n_atoms"]) -> Float[Array, "n_atoms g n"]:
            axis = (jnp.arange(n, dtype=dtype) - n // 2) * d
            offset = axis - centre[:, None, None]
            if self.sampling_mode == "point":
                return jnp.exp(-0.5 * (offset / sigma) ** 2) / (jnp.sqrt(2 * jnp.pi) * sigma)
            scale = jnp.sqrt(2.0).astype(dtype) * sigma
            mass = jax.lax.erf((offset + d / 2) / scale) - jax.lax.erf((offset - d / 2) / scale)
            return 0.5 * mass / d

        ny, nx = self.shape
        py = profile(ny, volume.positions[:, 1])
        px = profile(nx, volume.positions[:, 0])
        image = jnp.einsum(
            "ng,ngy,ngx->yx", volume.amplitudes, py, px, precision=jax.lax.Precision.HIGHEST
        )
        return _to_requested_space(image, outputs_real_space)


class RealVoxelProjection(AbstractVolumeIntegrator, strict=True):
    """Project a `RealVoxelGridVolume`: resample it on its (rotated) coordinate grid by
    trilinear interpolation and sum along z, times the voxel size."""

    voxel_size: Float[Array, ""]

    def __init__(self, voxel_size=1.0):
        """**Arguments:**

        - `voxel_size`: the voxel size of the volume's grid in A.
        """
        self.voxel_size = jnp.asarray(voxel_size, dtype=float)

    def __call__(
        self, volume_representation: RealVoxelGridVolume, *, outputs_real_space: bool = True
    ) -> Inexact[Array, "ny nx"]:
        """Project the volume; see `AbstractVolumeIntegrator.__call__`."""
        if not isinstance(volume_representation, RealVoxelGridVolume):
            raise TypeError(
                "RealVoxelProjection projects a RealVoxelGridVolume; got "
                f"{type(volume_representation).__name__}"
            )
        resampled = volume_representation.sample_voxel_grid()
        image = jnp.sum(resampled, axis=0) * self.voxel_size.astype(resampled.dtype)
        return _to_requested_space(image, outputs_real_space)

