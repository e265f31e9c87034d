"""Image and volume operations: Fourier transforms, Fourier operators, interpolation."""

from .edges import (
    crop_to_shape as crop_to_shape,
    pad_to_shape as pad_to_shape,
    resize_with_crop_or_pad as resize_with_crop_or_pad,
)
from .fft import (
    fftn as fftn,
    fftshift_spectrum as fftshift_spectrum,
    ifftn as ifftn,
    irfftn as irfftn,
    rfftn as rfftn,
)
from .fourier_operators import (
    AbstractFourierOperator as AbstractFourierOperator,
    AbstractRadialFourierOperator as AbstractRadialFourierOperator,
    FourierConstant as FourierConstant,
    FourierGaussian as FourierGaussian,
    FourierSinc as FourierSinc,
    ProductFourierOperator as ProductFourierOperator,
    SumFourierOperator as SumFourierOperator,
)
from .masks import SincCorrectionMask as SincCorrectionMask
from .scattering_factors import (
    LobatoScatteringFactor as LobatoScatteringFactor,
    PengScatteringFactor as PengScatteringFactor,
)
from .spectra import (
    convert_fftn_to_rfftn as convert_fftn_to_rfftn,
    convert_rfftn_to_fftn as convert_rfftn_to_fftn,
)
from .splines import (
    compute_spline_coefficients as compute_spline_coefficients,
    evaluate_spline as evaluate_spline,
)


__all__ = [
    "AbstractFourierOperator",
    "AbstractRadialFourierOperator",
    "FourierConstant",
    "FourierGaussian",
    "FourierSinc",
    "LobatoScatteringFactor",
    "PengScatteringFactor",
    "ProductFourierOperator",
    "SincCorrectionMask",
    "SumFourierOperator",
    "compute_spline_coefficients",
    "convert_fftn_to_rfftn",
    "convert_rfftn_to_fftn",
    "crop_to_shape",
    "evaluate_spline",
    "fftn",
    "fftshift_spectrum",
    "ifftn",
    "irfftn",
    "pad_to_shape",
    "resize_with_crop_or_pad",
    "rfftn",
]
