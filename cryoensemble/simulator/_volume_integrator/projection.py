"""Projections of volumes along z: 2D images of line integrals of the potential (A^-1).

cryojax's integrator API: an integrator holds only its options, and
`integrator.integrate(volume, image_config, outputs_real_space=False)` returns the
projection at `image_config.padded_shape` and `image_config.pixel_size`, as the image or
as its `cryoensemble.ndimage.rfftn` (zero frequency in the corner, phases about the
origin pixel). Pixel j of an axis of length n sits at (j - n // 2) * pixel_size, as voxels
do, and rotated volumes (`volume.rotate_to_pose(pose)`) project as the rotated object.

- `GaussianMixtureProjection`: exact line integrals of a `GaussianMixtureVolume` (a 2D
  gaussian mixture), averaged over each pixel with error functions: the reference the
  other routes are checked against.
- `FFTAtomProjection`: an `IndependentAtomVolume` through a 2D type-1 NUFFT per atom
  type and its scattering factors on the central slice (band-limited).
- `FourierSliceExtraction`: the Fourier projection-slice theorem on a voxel volume in
  Fourier space, interpolated linearly (`FourierVoxelGridVolume`) or by cubic B-spline
  (`FourierVoxelSplineVolume`).
- `RealVoxelProjection`: a `RealVoxelCloudVolume` through a 2D type-1 NUFFT (cryojax's
  route), or a `RealVoxelGridVolume` resampled on its (rotated) coordinate grid and
  summed along z.
- `AutoVolumeProjection`: the default integrator of the volume's type.
"""

from abc import abstractmethod
from typing import Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.ndimage import map_coordinates
from jaxtyping import Array, Float, Inexact

from ...ndimage.edges import resize_with_crop_or_pad
from ...ndimage.fft import irfftn, rfftn
from ...ndimage.fourier_operators import AbstractFourierOperator, FourierSinc
from ...ndimage.nufft import BACKENDS, array_platform, nufft_type1, resolve_backend
from ...ndimage.spectra import convert_fftn_to_rfftn
from ...ndimage.splines import evaluate_spline
from .._image_config import AbstractImageConfig
from .._volume.base_volume import AbstractVolumeRepresentation
from .._volume.gaussian_mixture import GaussianMixtureVolume
from .._volume.independent_atom import IndependentAtomVolume
from .._volume.voxel_volumes import (
    FourierVoxelGridVolume,
    FourierVoxelSplineVolume,
    RealVoxelCloudVolume,
    RealVoxelGridVolume,
)


def _optional_shape(shape, owner: str) -> tuple[int, int] | None:
    if shape is None:
        return None
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"{owner}: shape must be two positive integers (ny, nx); got {shape}")
    return shape


def _check_sampling_mode(sampling_mode: str, owner: str) -> str:
    if sampling_mode not in ("average", "point"):
        raise ValueError(f"{owner}: sampling_mode must be 'average' or 'point'; got {sampling_mode!r}")
    return sampling_mode


def _from_real(image: Float[Array, "ny nx"], image_config: AbstractImageConfig, outputs_real_space: bool):
    """A real image resized to the padded shape, as asked: the image or its rfftn."""
    image = resize_with_crop_or_pad(image, image_config.padded_shape)
    return image if outputs_real_space else rfftn(image)


class AbstractVolumeIntegrator(eqx.Module):
    """Projects a volume representation along z onto an image."""

    @abstractmethod
    def integrate(
        self,
        volume_representation: AbstractVolumeRepresentation,
        image_config: AbstractImageConfig,
        outputs_real_space: bool = False,
    ) -> Inexact[Array, "py px"]:
        """The projection of the volume, in A^-1, at `image_config.padded_shape`.

        **Arguments:**

        - `volume_representation`: the (rotated) volume.
        - `image_config`: the image grid (`padded_shape`, `pixel_size`).
        - `outputs_real_space`: if `True`, the image; otherwise its `rfftn`.
        """


class GaussianMixtureProjection(AbstractVolumeIntegrator):
    """Exact projections of a `GaussianMixtureVolume` along z.

    The line integral of a normalized 3D gaussian is the 2D gaussian of the same
    variance, so the image is `sum a N2((x, y); (p_x, p_y), s^2)`; with
    `sampling_mode='average'` each pixel holds its average over the pixel,
    `a / d^2 prod_(x, y) [erf((x_j - p + d/2) / (sqrt(2) s)) - erf((x_j - p - d/2) /
    (sqrt(2) s))] / 2`, and with `'point'` its value at the pixel centre.
    """

    shape: tuple[int, int] | None = eqx.field(static=True)
    sampling_mode: Literal["average", "point"] = eqx.field(static=True)
    n_batches: int = eqx.field(static=True)

    def __init__(
        self,
        *,
        shape: tuple[int, int] | None = None,
        sampling_mode: Literal["average", "point"] = "average",
        n_batches: int = 1,
    ):
        """**Arguments:**

        - `shape`: compute the image at this shape (ny, nx), then crop or pad it to the
          `padded_shape` (cheaper when the padded box is much larger than the molecule).
        - `sampling_mode`: `'average'` (pixel averages) or `'point'` (pixel centres).
        - `n_batches`: sum the atoms in this many groups, one after the other (memory).
        """
        self.shape = _optional_shape(shape, "GaussianMixtureProjection")
        self.sampling_mode = _check_sampling_mode(sampling_mode, "GaussianMixtureProjection")
        if int(n_batches) < 1:
            raise ValueError(f"GaussianMixtureProjection: n_batches must be >= 1; got {n_batches}")
        self.n_batches = int(n_batches)

    def integrate(
        self,
        volume_representation: GaussianMixtureVolume,
        image_config: AbstractImageConfig,
        outputs_real_space: bool = False,
    ) -> Inexact[Array, "py px"]:
        """Project the volume; see `AbstractVolumeIntegrator.integrate`."""
        volume = volume_representation
        if not isinstance(volume, GaussianMixtureVolume):
            raise TypeError(
                f"GaussianMixtureProjection projects a GaussianMixtureVolume; got "
                f"{type(volume).__name__}"
            )
        shape = image_config.padded_shape if self.shape is None else self.shape
        dtype = volume.positions.dtype
        d = image_config.pixel_size.astype(dtype)
        ny, nx = shape
        image = jnp.zeros(shape, dtype)
        n = volume.positions.shape[0]
        bounds = np.linspace(0, n, self.n_batches + 1).astype(int)
        for start, stop in zip(bounds[:-1], bounds[1:]):
            if stop > start:
                image = image + self._project(
                    volume.positions[start:stop], volume.amplitudes[start:stop],
                    volume.variances[start:stop], d, ny, nx,
                )
        return _from_real(image, image_config, outputs_real_space)

    def _project(self, positions, amplitudes, variances, d, ny, nx):
        dtype = positions.dtype
        sigma = jnp.sqrt(variances)[..., None]  # (n, g, 1)

        def profile(n: int, centre: Float[Array, " n_atoms"]) -> Float[Array, "n_atoms g n"]:
            axis = (jnp.arange(n, dtype=dtype) - n // 2) * d
            offset = axis - centre[:, None, None]
            if self.sampling_mode == "point":
                return jnp.exp(-0.5 * (offset / sigma) ** 2) / (jnp.sqrt(2 * jnp.pi) * sigma)
            scale = jnp.sqrt(2.0).astype(dtype) * sigma
            mass = jax.lax.erf((offset + d / 2) / scale) - jax.lax.erf((offset - d / 2) / scale)
            return 0.5 * mass / d

        py = profile(ny, positions[:, 1])
        px = profile(nx, positions[:, 0])
        return jnp.einsum("ng,ngy,ngx->yx", amplitudes, py, px, precision=jax.lax.Precision.HIGHEST)


def _nufft_opts(opts: Any, eps: float) -> Any:
    """Options as given; by default a fine grid of 2x below eps = 1e-9, as FINUFFT's own
    automatic choice does (the 1.25x grid cannot reach such tolerances)."""
    if opts is None and eps < 1e-9:
        return (("upsampfac", 2.0),)
    return tuple(sorted(opts.items())) if isinstance(opts, dict) else opts


def _is_operator(x) -> bool:
    return isinstance(x, AbstractFourierOperator)


class FFTAtomProjection(AbstractVolumeIntegrator):
    """Project an `IndependentAtomVolume` with a 2D type-1 NUFFT per atom type.

    The image's spectrum on the central slice is `S(xi) sum_types f_type(xi) sum_n
    exp(-2 pi i xi.(x_n, y_n))` over the image grid's frequencies, with `S` the pixel's
    sinc for `sampling_mode='average'` (the band-limited pixel average) and 1 for
    `'point'`. With `upsample_factor` u the image is computed on a u-times finer grid,
    placed so that each block of u x u fine pixels tiles one pixel, and block-averaged:
    less aliasing for atoms sharper than the pixel. The NUFFT engine is chosen as in
    `FFTAtomRenderFn` (`backend`).
    """

    sampling_mode: Literal["average", "point"] = eqx.field(static=True)
    upsample_factor: int | None = eqx.field(static=True)
    shape: tuple[int, int] | None = eqx.field(static=True)
    eps: float = eqx.field(static=True)
    opts: Any = eqx.field(static=True)
    backend: Literal["auto", "finufft", "jax"] = eqx.field(static=True)

    def __init__(
        self,
        *,
        sampling_mode: Literal["average", "point"] = "average",
        upsample_factor: int | None = None,
        shape: tuple[int, int] | None = None,
        eps: float = 1e-6,
        opts: Any = None,
        backend: Literal["auto", "finufft", "jax"] = "auto",
    ):
        """**Arguments:**

        - `sampling_mode`: `'average'` (pixel averages) or `'point'` (pixel centres).
        - `upsample_factor`: compute on a grid this many times finer, then block-average.
        - `shape`: compute at this shape (ny, nx), then crop or pad to `padded_shape`.
        - `eps`: the NUFFT's relative tolerance.
        - `opts`: jax-finufft options (an `Opts`/`NestedOpts`, or a dict of `Opts` fields).
        - `backend`: `'auto'` (jax-finufft where it runs on the positions' device, else
          the JAX-native NUFFT), `'finufft'` or `'jax'`.
        """
        self.sampling_mode = _check_sampling_mode(sampling_mode, "FFTAtomProjection")
        if upsample_factor is not None and int(upsample_factor) < 1:
            raise ValueError(f"FFTAtomProjection: upsample_factor must be >= 1; got {upsample_factor}")
        self.upsample_factor = None if upsample_factor is None else int(upsample_factor)
        self.shape = _optional_shape(shape, "FFTAtomProjection")
        self.eps = float(eps)
        self.opts = _nufft_opts(opts, self.eps)
        if backend not in BACKENDS:
            raise ValueError(f"FFTAtomProjection: backend must be one of {BACKENDS}; got {backend!r}")
        self.backend = backend

    def integrate(
        self,
        volume_representation: IndependentAtomVolume,
        image_config: AbstractImageConfig,
        outputs_real_space: bool = False,
    ) -> Inexact[Array, "py px"]:
        """Project the volume; see `AbstractVolumeIntegrator.integrate`."""
        volume = volume_representation
        if not isinstance(volume, IndependentAtomVolume):
            raise TypeError(
                f"FFTAtomProjection projects an IndependentAtomVolume; got {type(volume).__name__}"
            )
        positions = jax.tree.leaves(volume.positions)
        factors = jax.tree.leaves(volume.scattering_factors, is_leaf=_is_operator)
        dtype = jnp.result_type(*positions, jnp.float32)
        complex_dtype = jnp.result_type(dtype, jnp.complex64)
        shape = image_config.padded_shape if self.shape is None else self.shape
        u = 1 if self.upsample_factor is None else self.upsample_factor
        fine = (u * shape[0], u * shape[1])
        pixel_size = image_config.pixel_size.astype(dtype) / u
        # Fine pixel J = u i + s of an axis sits at (i - n // 2) d + (s - (u - 1) / 2) d / u,
        # so u consecutive fine pixels tile coarse pixel i: the standard fine grid, shifted.
        shift = jnp.asarray(
            [(u * n) // 2 - u * (n // 2) - (u - 1) / 2 for n in shape[::-1]], dtype
        ) * pixel_size
        modes = [np.arange(-(n // 2), (n + 1) // 2) for n in fine]
        fy, fx = (jnp.asarray(m / n, dtype) / pixel_size for m, n in zip(modes, fine))
        frequencies = jnp.stack(jnp.meshgrid(fx, fy, indexing="xy"), axis=-1)  # (ny, nx, 2)
        box = jnp.asarray(fine, dtype) * pixel_size  # (Ly, Lx)
        spectrum = jnp.zeros(fine, complex_dtype)
        for atoms, factor in zip(positions, factors):
            if atoms.shape[0] == 0:
                continue
            xy = atoms[:, :2].astype(dtype) - shift
            points = 2.0 * np.pi * xy[:, ::-1] / box
            backend = resolve_backend(self.backend, array_platform(atoms))
            sums = nufft_type1(
                fine, jnp.ones(atoms.shape[0], complex_dtype), points,
                iflag=-1, eps=self.eps, backend=backend, opts=self.opts,
            )
            spectrum = spectrum + factor(frequencies).astype(dtype) * sums
        if self.sampling_mode == "average":
            spectrum = spectrum * FourierSinc(pixel_size)(frequencies).astype(dtype)
        image = jnp.fft.fftshift(jnp.fft.ifftn(jnp.fft.ifftshift(spectrum))).real
        image = image / pixel_size**2
        if u > 1:
            image = image.reshape(shape[0], u, shape[1], u).mean(axis=(1, 3))
        return _from_real(image, image_config, outputs_real_space)


class FourierSliceExtraction(AbstractVolumeIntegrator):
    """Project a Fourier-space voxel volume by the Fourier projection-slice theorem.

    The image's centred spectrum is the volume's spectrum on its
    `frequency_slice_in_pixels` (rotated by `rotate_to_pose`): interpolated linearly for a
    `FourierVoxelGridVolume`, evaluated as a cubic B-spline for a
    `FourierVoxelSplineVolume`. At the identity pose the slice falls on grid points and
    the image is the grid summed along z, times the voxel size (the `pixel_size`: the
    volume's voxels are taken to be the image's pixels). Linear interpolation darkens the
    image towards the box edges unless the volume was made with `sinc_correction=True`;
    padding (`pad_scale`) and splines cut the remaining error.
    """

    outputs_integral: bool = eqx.field(static=True)
    out_of_bounds_mode: str = eqx.field(static=True)
    fill_value: complex = eqx.field(static=True)

    def __init__(
        self,
        *,
        outputs_integral: bool = True,
        out_of_bounds_mode: str = "fill",
        fill_value: complex = 0.0 + 0.0j,
    ):
        """**Arguments:**

        - `outputs_integral`: multiply by the pixel size, so the image is the line
          integral (A^-1) rather than the sum of voxels.
        - `out_of_bounds_mode`: frequencies outside the box: `'fill'` (with
          `fill_value`), or a `jax.scipy.ndimage.map_coordinates` mode for linear
          interpolation (`'nearest'`, `'wrap'`, `'mirror'`, `'reflect'`).
        - `fill_value`: the spectrum outside the box for `'fill'`.
        """
        modes = ("fill", "nearest", "wrap", "mirror", "reflect")
        if out_of_bounds_mode not in modes:
            raise ValueError(
                f"FourierSliceExtraction: out_of_bounds_mode must be one of {modes}; got "
                f"{out_of_bounds_mode!r}"
            )
        self.outputs_integral = bool(outputs_integral)
        self.out_of_bounds_mode = out_of_bounds_mode
        self.fill_value = complex(fill_value)

    def integrate(
        self,
        volume_representation: FourierVoxelGridVolume | FourierVoxelSplineVolume,
        image_config: AbstractImageConfig,
        outputs_real_space: bool = False,
    ) -> Inexact[Array, "py px"]:
        """Project the volume; see `AbstractVolumeIntegrator.integrate`."""
        volume = volume_representation
        if not isinstance(volume, (FourierVoxelGridVolume, FourierVoxelSplineVolume)):
            raise TypeError(
                "FourierSliceExtraction projects a FourierVoxelGridVolume or a "
                f"FourierVoxelSplineVolume; got {type(volume).__name__}"
            )
        image = _extract(self, volume)
        if self.outputs_integral:
            image = image * image_config.pixel_size.astype(image.dtype)
        return _from_real(image, image_config, outputs_real_space)

    def _project(self, volume) -> Float[Array, "dim dim"]:
        frequency_slice = volume.frequency_slice_in_pixels[0]
        dim = frequency_slice.shape[0]
        # Cycles per voxel to indices of the centred spectrum, (x, y, z) -> [z, y, x].
        indices = frequency_slice[..., ::-1] * dim + dim // 2
        coordinates = [indices[..., j] for j in range(3)]
        if isinstance(volume, FourierVoxelGridVolume):
            mode = "constant" if self.out_of_bounds_mode == "fill" else self.out_of_bounds_mode
            spectrum = map_coordinates(
                volume.fourier_voxel_grid, coordinates, order=1, mode=mode, cval=self.fill_value
            )
        else:
            spectrum = evaluate_spline(volume.spline_coefficients, tuple(coordinates), cval=self.fill_value)
        # The real part: interpolation near the unpaired Nyquist edge is not exactly
        # Hermitian.
        return jnp.fft.fftshift(jnp.fft.ifftn(jnp.fft.ifftshift(spectrum))).real


# Compiled once per volume type and size: the spline's 64 gathers dispatched one by one
# cost more than the whole projection.
@eqx.filter_jit
def _extract(integrator: FourierSliceExtraction, volume):
    return integrator._project(volume)


class RealVoxelProjection(AbstractVolumeIntegrator):
    """Project real-space voxels along z, times the pixel size (voxels are pixels).

    A `RealVoxelCloudVolume` goes through a 2D type-1 NUFFT of its (rotated) points onto
    the padded image's frequencies (cryojax's route; exact where the points sit on
    pixels). A `RealVoxelGridVolume` is resampled on its (rotated) coordinate grid by
    trilinear interpolation and summed along z.
    """

    eps: float = eqx.field(static=True)
    opts: Any = eqx.field(static=True)
    backend: Literal["auto", "finufft", "jax"] = eqx.field(static=True)

    def __init__(self, *, eps: float = 1e-6, opts: Any = None, backend: Literal["auto", "finufft", "jax"] = "auto"):
        """**Arguments:**

        - `eps`: the NUFFT's relative tolerance.
        - `opts`: jax-finufft options (an `Opts`/`NestedOpts`, or a dict of `Opts` fields).
        - `backend`: the NUFFT engine, as for `FFTAtomProjection`.
        """
        self.eps = float(eps)
        self.opts = _nufft_opts(opts, self.eps)
        if backend not in BACKENDS:
            raise ValueError(f"RealVoxelProjection: backend must be one of {BACKENDS}; got {backend!r}")
        self.backend = backend

    def integrate(
        self,
        volume_representation: RealVoxelCloudVolume | RealVoxelGridVolume,
        image_config: AbstractImageConfig,
        outputs_real_space: bool = False,
    ) -> Inexact[Array, "py px"]:
        """Project the volume; see `AbstractVolumeIntegrator.integrate`."""
        volume = volume_representation
        pixel_size = image_config.pixel_size
        if isinstance(volume, RealVoxelGridVolume):
            resampled = volume.sample_voxel_grid()
            image = jnp.sum(resampled, axis=0) * pixel_size.astype(resampled.dtype)
            return _from_real(image, image_config, outputs_real_space)
        if not isinstance(volume, RealVoxelCloudVolume):
            raise TypeError(
                "RealVoxelProjection projects a RealVoxelCloudVolume or a RealVoxelGridVolume; "
                f"got {type(volume).__name__}"
            )
        shape = image_config.padded_shape
        dtype = volume.weights.dtype
        complex_dtype = jnp.result_type(dtype, jnp.complex64)
        xy = volume.coordinate_list_in_pixels[:, :2]
        points = 2.0 * np.pi * xy[:, ::-1] / jnp.asarray(shape, dtype)
        backend = resolve_backend(self.backend, array_platform(volume.weights))
        modes = nufft_type1(
            shape, volume.weights.astype(complex_dtype), points,
            iflag=-1, eps=self.eps, backend=backend, opts=self.opts,
        )
        spectrum = convert_fftn_to_rfftn(jnp.fft.ifftshift(modes)) * pixel_size.astype(dtype)
        return irfftn(spectrum, s=shape) if outputs_real_space else spectrum


class AutoVolumeProjection(AbstractVolumeIntegrator):
    """Project with the default integrator of the volume's type.

    | Volume representation | Integrator |
    | :-- | :-- |
    | `GaussianMixtureVolume` | `GaussianMixtureProjection` |
    | `IndependentAtomVolume` | `FFTAtomProjection` |
    | `FourierVoxelGridVolume`, `FourierVoxelSplineVolume` | `FourierSliceExtraction` |
    | `RealVoxelCloudVolume`, `RealVoxelGridVolume` | `RealVoxelProjection` |
    """

    options: dict[str, Any] = eqx.field(static=True)

    def __init__(self, options: dict[str, Any] = {}):
        """**Arguments:**

        - `options`: keyword arguments of the chosen integrator.
        """
        self.options = dict(options)

    def select_integrator(self, volume_representation: AbstractVolumeRepresentation) -> AbstractVolumeIntegrator:
        """The integrator for `volume_representation`, built with `options`."""
        volume = volume_representation
        if isinstance(volume, (FourierVoxelGridVolume, FourierVoxelSplineVolume)):
            return FourierSliceExtraction(**self.options)
        if isinstance(volume, GaussianMixtureVolume):
            return GaussianMixtureProjection(**self.options)
        if isinstance(volume, (RealVoxelCloudVolume, RealVoxelGridVolume)):
            return RealVoxelProjection(**self.options)
        if isinstance(volume, IndependentAtomVolume):
            return FFTAtomProjection(**self.options)
        raise TypeError(
            f"AutoVolumeProjection cannot project a {type(volume).__name__}; pass a custom "
            "representation to its own integrator"
        )

    def integrate(
        self,
        volume_representation: AbstractVolumeRepresentation,
        image_config: AbstractImageConfig,
        outputs_real_space: bool = False,
    ) -> Inexact[Array, "py px"]:
        """Project with the selected integrator; see `AbstractVolumeIntegrator.integrate`."""
        integrator = self.select_integrator(volume_representation)
        return integrator.integrate(volume_representation, image_config, outputs_real_space)
