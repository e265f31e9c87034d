"""Electron-optical constants as functions of the accelerating voltage."""

import jax.numpy as jnp
import scipy.constants
from jaxtyping import Array, Float


def wavelength_from_kilovolts(voltage_in_kilovolts) -> Float[Array, ""]:
    """The relativistic electron wavelength in A.

    Spence, *High-resolution electron microscopy* (2013), Eq. 2.5, with its constants:
    `lambda = 12.2639 / sqrt(V + 0.97845e-6 V^2)` for V in volts (cryojax uses the same).

    **Arguments:**

    - `voltage_in_kilovolts`: the accelerating voltage, kV.
    """
    volts = 1000.0 * jnp.asarray(voltage_in_kilovolts, dtype=float)
    return 12.2639 / jnp.sqrt(volts + 0.97845e-6 * volts**2)


def lorentz_factor_from_kilovolts(voltage_in_kilovolts) -> Float[Array, ""]:
    """The Lorentz factor `1 + e V / (m0 c^2)` of the beam electrons.

    **Arguments:**

    - `voltage_in_kilovolts`: the accelerating voltage, kV.
    """
    rest_energy = scipy.constants.electron_mass * scipy.constants.speed_of_light**2
    energy = scipy.constants.elementary_charge * 1000.0 * jnp.asarray(voltage_in_kilovolts, dtype=float)
    return 1.0 + energy / rest_energy


def interaction_constant_from_kilovolts(voltage_in_kilovolts) -> Float[Array, ""]:
    """The interaction constant `sigma = lambda gamma` (A) for potentials in A^-2.

    With the potential rescaled to `U = m0 e V / (2 pi hbar^2)` (this package's volumes),
    the exit-wave phase is `eta(x, y) = sigma int U dz` (Hawkes & Kasper, *Principles of
    Electron Optics* vol. 4 (2022), Eqs. 69.6 and 69.34b).

    **Arguments:**

    - `voltage_in_kilovolts`: the accelerating voltage, kV.
    """
    return wavelength_from_kilovolts(voltage_in_kilovolts) * lorentz_factor_from_kilovolts(
        voltage_in_kilovolts
    )
