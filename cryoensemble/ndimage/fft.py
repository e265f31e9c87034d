"""Fourier transforms over all axes of an image or volume (numpy's sign and norm)."""

import jax.numpy as jnp
from jaxtyping import Array, Complex, Float, Inexact


def fftn(array: Inexact[Array, "..."], axes=None) -> Complex[Array, "..."]:
    """Full n-dimensional FFT, zero frequency in the corner."""
    return jnp.fft.fftn(array, axes=axes)


def ifftn(array: Complex[Array, "..."], axes=None) -> Complex[Array, "..."]:
    """Inverse of `fftn`."""
    return jnp.fft.ifftn(array, axes=axes)


def rfftn(array: Float[Array, "..."], axes=None) -> Complex[Array, "..."]:
    """Real-input FFT: the last axis holds n // 2 + 1 frequencies."""
    return jnp.fft.rfftn(array, axes=axes)


def irfftn(array: Complex[Array, "..."], s=None, axes=None) -> Float[Array, "..."]:
    """Inverse of `rfftn`; pass the real-space shape `s` (odd last axes are ambiguous)."""
    return jnp.fft.irfftn(array, s=s, axes=axes)


def fftshift_spectrum(spectrum: Complex[Array, "..."], is_rfft: bool) -> Complex[Array, "..."]:
    """Move the zero frequency to the centre; an rfft's half axis (the last) stays as is."""
    axes = tuple(range(spectrum.ndim - 1)) if is_rfft else None
    return jnp.fft.fftshift(spectrum, axes=axes)
