"""Physical tables and conventions: electron scattering factor parameters, B-factors,
electron-optical constants."""

from ._conventions import (
    b_factor_to_variance as b_factor_to_variance,
    b_factor_to_variance_numpy as b_factor_to_variance_numpy,
    variance_to_b_factor as variance_to_b_factor,
)
from .physical_constants import (
    interaction_constant_from_kilovolts as interaction_constant_from_kilovolts,
    lorentz_factor_from_kilovolts as lorentz_factor_from_kilovolts,
    wavelength_from_kilovolts as wavelength_from_kilovolts,
)
from .scattering_factors import (
    LobatoScatteringFactorParameters as LobatoScatteringFactorParameters,
    PengScatteringFactorParameters as PengScatteringFactorParameters,
    check_atomic_numbers_supported as check_atomic_numbers_supported,
    peng_parameters_numpy as peng_parameters_numpy,
)


__all__ = [
    "LobatoScatteringFactorParameters",
    "PengScatteringFactorParameters",
    "b_factor_to_variance",
    "b_factor_to_variance_numpy",
    "check_atomic_numbers_supported",
    "interaction_constant_from_kilovolts",
    "lorentz_factor_from_kilovolts",
    "peng_parameters_numpy",
    "variance_to_b_factor",
    "wavelength_from_kilovolts",
]
