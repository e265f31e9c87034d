"""Physical tables: electron scattering factor parameters."""

from .scattering_factors import PengScatteringFactorParameters as PengScatteringFactorParameters


__all__ = ["PengScatteringFactorParameters"]
