"""Image and volume operations: Fourier transforms, Fourier operators, interpolation."""

from ..coordinates import (
    make_coordinate_grid as make_coordinate_grid,
    make_frequency_grid as make_frequency_grid,
    make_frequency_slice as make_frequency_slice,
    make_radial_coordinate_grid as make_radial_coordinate_grid,
    make_radial_frequency_grid as make_radial_frequency_grid,
)
from .downsample import (
    fourier_crop_downsample as fourier_crop_downsample,
    fourier_crop_to_shape as fourier_crop_to_shape,
)
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
    CustomFourierOperator as CustomFourierOperator,
    FourierConstant as FourierConstant,
    FourierDC as FourierDC,
    FourierExp2D as FourierExp2D,
    FourierGaussian as FourierGaussian,
    FourierSinc as FourierSinc,
    PeakedFourierGaussian as PeakedFourierGaussian,
    ProductFourierOperator as ProductFourierOperator,
    SumFourierOperator as SumFourierOperator,
)
from .masks import SincCorrectionMask as SincCorrectionMask
from .normalize import (
    background_subtract_image as background_subtract_image,
    compute_edge_value as compute_edge_value,
    rescale_image as rescale_image,
    standardize_image as standardize_image,
)
from .real_operators import (
    AbstractRealOperator as AbstractRealOperator,
    ProductRealOperator as ProductRealOperator,
    RealConstant as RealConstant,
    RealGaussian as RealGaussian,
    SumRealOperator as SumRealOperator,
)
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
from .statistics import (
    compute_binned_powerspectrum as compute_binned_powerspectrum,
    compute_fourier_ring_correlation as compute_fourier_ring_correlation,
    compute_fourier_shell_correlation as compute_fourier_shell_correlation,
)


__all__ = [
    "AbstractFourierOperator",
    "AbstractRadialFourierOperator",
    "AbstractRealOperator",
    "CustomFourierOperator",
    "FourierConstant",
    "FourierDC",
    "FourierExp2D",
    "FourierGaussian",
    "FourierSinc",
    "LobatoScatteringFactor",
    "PeakedFourierGaussian",
    "PengScatteringFactor",
    "ProductFourierOperator",
    "ProductRealOperator",
    "RealConstant",
    "RealGaussian",
    "SincCorrectionMask",
    "SumFourierOperator",
    "SumRealOperator",
    "background_subtract_image",
    "compute_binned_powerspectrum",
    "compute_edge_value",
    "compute_fourier_ring_correlation",
    "compute_fourier_shell_correlation",
    "compute_spline_coefficients",
    "convert_fftn_to_rfftn",
    "convert_rfftn_to_fftn",
    "crop_to_shape",
    "evaluate_spline",
    "fftn",
    "fftshift_spectrum",
    "fourier_crop_downsample",
    "fourier_crop_to_shape",
    "ifftn",
    "irfftn",
    "make_coordinate_grid",
    "make_frequency_grid",
    "make_frequency_slice",
    "make_radial_coordinate_grid",
    "make_radial_frequency_grid",
    "pad_to_shape",
    "rescale_image",
    "resize_with_crop_or_pad",
    "rfftn",
    "standardize_image",
]
