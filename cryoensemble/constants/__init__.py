"""Physical tables and conventions: electron scattering factor parameters, B-factors."""

from ._conventions import (
    b_factor_to_variance as b_factor_to_variance,
    variance_to_b_factor as variance_to_b_factor,
)
from .scattering_factors import (
    LobatoScatteringFactorParameters as LobatoScatteringFactorParameters,
    PengScatteringFactorParameters as PengScatteringFactorParameters,
)


__all__ = [
    "LobatoScatteringFactorParameters",
    "PengScatteringFactorParameters",
    "b_factor_to_variance",
    "variance_to_b_factor",
]
