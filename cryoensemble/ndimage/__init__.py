"""Image and volume operations: Fourier transforms."""

from .fft import (
    fftn as fftn,
    fftshift_spectrum as fftshift_spectrum,
    ifftn as ifftn,
    irfftn as irfftn,
    rfftn as rfftn,
)


__all__ = ["fftn", "fftshift_spectrum", "ifftn", "irfftn", "rfftn"]
