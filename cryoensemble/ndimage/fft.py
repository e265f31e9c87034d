"""Fourier transforms in cryojax's conventions (numpy's sign and norm).

Real-space arrays have their origin at index `n // 2` of each axis (the voxel and pixel
convention of the whole package), so the forward transforms `ifftshift` first and the
inverse transforms `fftshift` last: the spectrum's phases are taken about that origin,
and its zero frequency is in the corner.
"""

import jax.numpy as jnp
from jaxtyping import Array, Complex, Float, Inexact


def fftn(
    array: Inexact[Array, "..."], s: tuple[int, ...] | None = None, axes=None
) -> Complex[Array, "..."]:
    """`jax.numpy.fft.fftn` of an array whose origin is at index `n // 2`.

    **Arguments:**

    - `array`: the real-space array (origin at the centre).
    - `s`, `axes`: as for `jax.numpy.fft.fftn`.
    """
    return jnp.fft.fftn(jnp.fft.ifftshift(array, axes=axes), s=s, axes=axes)


def ifftn(
    array: Complex[Array, "..."], s: tuple[int, ...] | None = None, axes=None
) -> Complex[Array, "..."]:
    """Inverse of `fftn`: the real-space array with its origin at index `n // 2`."""
    return jnp.fft.fftshift(jnp.fft.ifftn(array, s=s, axes=axes), axes=axes)


def rfftn(
    array: Float[Array, "..."], s: tuple[int, ...] | None = None, axes=None
) -> Complex[Array, "..."]:
    """Real-input `fftn`: the last axis holds n // 2 + 1 frequencies."""
    return jnp.fft.rfftn(jnp.fft.ifftshift(array, axes=axes), s=s, axes=axes)


def irfftn(
    array: Complex[Array, "..."], s: tuple[int, ...] | None = None, axes=None
) -> Float[Array, "..."]:
    """Inverse of `rfftn`; pass the real-space shape `s` (odd last axes are ambiguous)."""
    return jnp.fft.fftshift(jnp.fft.irfftn(array, s=s, axes=axes), axes=axes)


def fftshift_spectrum(spectrum: Complex[Array, "..."], is_rfft: bool) -> Complex[Array, "..."]:
    """Move the zero frequency to the centre; an rfft's half axis (the last) stays as is."""
    axes = tuple(range(spectrum.ndim - 1)) if is_rfft else None
    return jnp.fft.fftshift(spectrum, axes=axes)
