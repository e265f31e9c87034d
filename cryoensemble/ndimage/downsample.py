"""Downsampling by cropping the spectrum (band-limited, sum preserving)."""

import jax.numpy as jnp
from jaxtyping import Array, Inexact

from .edges import crop_to_shape


def fourier_crop_to_shape(
    image_or_volume: Inexact[Array, "..."],
    shape: tuple[int, ...],
    outputs_real_space: bool = True,
    preserve_mean: bool = False,
) -> Inexact[Array, "..."]:
    """Crop the centred spectrum of an image or volume to `shape`.

    The sum over the array is kept (the zero frequency is unchanged);
    `preserve_mean=True` keeps the mean instead.

    **Arguments:**

    - `image_or_volume`: the 2D or 3D real-space array, origin at index `n // 2`.
    - `shape`: the downsampled shape.
    - `outputs_real_space`: if `False`, return the cropped, centred `fftn` spectrum.
    - `preserve_mean`: rescale so the mean, not the sum, is kept.
    """
    array = jnp.asarray(image_or_volume)
    shape = tuple(int(s) for s in shape)
    if array.ndim not in (2, 3) or len(shape) != array.ndim:
        raise ValueError(
            f"fourier_crop_to_shape: a 2D or 3D array and a shape of its rank; got "
            f"{array.shape} and {shape}"
        )
    spectrum = jnp.fft.fftshift(jnp.fft.fftn(jnp.fft.ifftshift(array)))
    cropped = crop_to_shape(spectrum, shape)
    if preserve_mean:
        cropped = cropped * (cropped.size / array.size)
    if not outputs_real_space:
        return cropped
    result = jnp.fft.fftshift(jnp.fft.ifftn(jnp.fft.ifftshift(cropped)))
    return result.real if not jnp.iscomplexobj(array) else result


def fourier_crop_downsample(
    image_or_volume: Inexact[Array, "..."],
    downsample_factor: float,
    outputs_real_space: bool = True,
    preserve_mean: bool = False,
) -> Inexact[Array, "..."]:
    """Downsample by `downsample_factor` (each axis to `int(n / factor)`) by cropping
    the spectrum; see `fourier_crop_to_shape`."""
    if not downsample_factor >= 1.0:
        raise ValueError(
            f"fourier_crop_downsample: downsample_factor must be >= 1; got {downsample_factor}"
        )
    shape = tuple(int(n / downsample_factor) for n in jnp.shape(image_or_volume))
    return fourier_crop_to_shape(image_or_volume, shape, outputs_real_space, preserve_mean)
