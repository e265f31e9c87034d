"""Physical tables: electron scattering factor parameters."""

from .scattering_factors import (
    LobatoScatteringFactorParameters as LobatoScatteringFactorParameters,
    PengScatteringFactorParameters as PengScatteringFactorParameters,
)


__all__ = ["LobatoScatteringFactorParameters", "PengScatteringFactorParameters"]
