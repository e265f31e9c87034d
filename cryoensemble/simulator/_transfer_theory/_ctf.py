"""The contrast transfer function (CTF) of a transmission electron microscope.

Conventions are cryojax's (0.6), so that switching imports keeps every image: defocus
in A, positive for underfocus; astigmatism in A (defocus U minus defocus V); astigmatism
angle and phase shift in degrees; spherical aberration in mm; the amplitude contrast
ratio as a fraction. With the aberration phase

    chi(k) = 2 pi (-lambda dz |k|^2 / 2 + Cs lambda^3 |k|^4 / 4),
    dz = defocus + astigmatism / 2 cos(2 (arctan2(k_x, k_y) - astigmatism_angle)),

the CTF is `sin(chi - phase_shift - arctan(ac / sqrt(1 - ac^2)))`: the textbook
`-(sqrt(1 - ac^2) sin(chi') + ac cos(chi'))` with `chi' = -chi + phase_shift` (CTFFIND4,
Rohou & Grigorieff 2015). cryojax measures the azimuth from the y axis
(`arctan2(k_x, k_y)`); RELION and CTFFIND measure their defocus angle from the x axis, so
RELION's `rlnDefocusAngle = a` is `astigmatism_angle = -a - 90` here, with
`defocus = (U + V) / 2` and `astigmatism = U - V`. RELION's CTF is the negative of this
one (RELION's particles have inverted contrast).
"""

from abc import abstractmethod

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Complex, Float

from ...ndimage import AbstractFourierOperator


# CODATA 2022: the electron rest energy (keV), and hc (keV A; exact in the 2019 SI).
_ELECTRON_REST_ENERGY_KEV = 510.99895069
_HC_KEV_ANGSTROM = 12.398419843320026


def wavelength_in_angstroms(voltage_in_kilovolts) -> Float[Array, ""]:
    """The relativistic electron wavelength (A) at an accelerating voltage (kV)."""
    e = jnp.asarray(voltage_in_kilovolts, dtype=float)
    return _HC_KEV_ANGSTROM / jnp.sqrt(e * (2.0 * _ELECTRON_REST_ENERGY_KEV + e))


def interaction_constant_in_angstroms(voltage_in_kilovolts) -> Float[Array, ""]:
    """The interaction constant `lambda * gamma` (A) that turns a projected rescaled
    potential (A^-1) into the phase shift of the exit wave (rad), as in cryojax."""
    e = jnp.asarray(voltage_in_kilovolts, dtype=float)
    return wavelength_in_angstroms(e) * (1.0 + e / _ELECTRON_REST_ENERGY_KEV)


def _phase_from_amplitude_contrast(amplitude_contrast_ratio) -> Float[Array, ""]:
    ac = jnp.asarray(amplitude_contrast_ratio, dtype=float)
    return jnp.arctan(ac / jnp.sqrt(1.0 - ac**2))


class AbstractCTF(eqx.Module, strict=True):
    """A contrast transfer function: aberration phase shifts over a frequency grid."""

    @abstractmethod
    def compute_aberration_phase_shifts(
        self,
        frequency_grid_in_angstroms: Float[Array, "y_dim x_dim 2"],
        wavelength_in_angstroms: Float[Array, ""] | float,
        defocus_offset: Float[Array, ""] | float | None = None,
    ) -> Float[Array, "y_dim x_dim"]:
        """The aberration phase `chi` (rad) at each frequency (A^-1, (x, y) last)."""

    def __call__(
        self,
        frequency_grid_in_angstroms: Float[Array, "y_dim x_dim 2"],
        wavelength_in_angstroms: Float[Array, ""] | float,
        amplitude_contrast_ratio: Float[Array, ""] | float = 0.1,
        phase_shift: Float[Array, ""] | float = 0.0,
        outputs_exp: bool = False,
        defocus_offset: Float[Array, ""] | float | None = None,
    ) -> Float[Array, "y_dim x_dim"] | Complex[Array, "y_dim x_dim"]:
        """The CTF on a frequency grid.

        **Arguments:**

        - `frequency_grid_in_angstroms`: frequencies in A^-1, e.g.
          `cryoensemble.coordinates.make_frequency_grid((ny, nx), pixel_size)`.
        - `wavelength_in_angstroms`: the electron wavelength in A.
        - `amplitude_contrast_ratio`: a fraction in [0, 1) (unused if `outputs_exp`).
        - `phase_shift`: an extra constant phase shift in degrees (phase plates).
        - `outputs_exp`: if `True`, the wave transfer function `exp(-i (chi - phase))`.
        - `defocus_offset`: A added to the defocus.
        """
        chi = self.compute_aberration_phase_shifts(
            frequency_grid_in_angstroms, wavelength_in_angstroms, defocus_offset
        )
        phase = jnp.deg2rad(jnp.asarray(phase_shift, dtype=chi.dtype))
        if outputs_exp:
            return jnp.exp(-1.0j * (chi - phase))
        return jnp.sin(chi - phase - _phase_from_amplitude_contrast(amplitude_contrast_ratio))


class AstigmaticCTF(AbstractCTF, strict=True):
    """An astigmatic CTF with spherical aberration (cryojax's `AstigmaticCTF`, named
    `AberratedAstigmaticCTF` in cryojax 0.5).

    From RELION's (or CTFFIND's) defocus U, V and angle a: `defocus_in_angstroms =
    (U + V) / 2`, `astigmatism_in_angstroms = U - V`, `astigmatism_angle = -a - 90`
    (cryojax measures the angle from the y axis, RELION from the x axis).
    """

    defocus_in_angstroms: Float[Array, ""]
    astigmatism_in_angstroms: Float[Array, ""]
    astigmatism_angle: Float[Array, ""]
    spherical_aberration_in_mm: Float[Array, ""]

    def __init__(
        self,
        defocus_in_angstroms=10000.0,
        astigmatism_in_angstroms=0.0,
        astigmatism_angle=0.0,
        spherical_aberration_in_mm=2.7,
    ):
        """**Arguments:**

        - `defocus_in_angstroms`: the mean defocus in A (positive: underfocus).
        - `astigmatism_in_angstroms`: defocus U minus defocus V, in A.
        - `astigmatism_angle`: degrees, in cryojax's convention (the U direction is at
          `arctan2(k_x, k_y) = astigmatism_angle`).
        - `spherical_aberration_in_mm`: Cs in mm.
        """
        self.defocus_in_angstroms = jnp.asarray(defocus_in_angstroms, dtype=float)
        self.astigmatism_in_angstroms = jnp.asarray(astigmatism_in_angstroms, dtype=float)
        self.astigmatism_angle = jnp.asarray(astigmatism_angle, dtype=float)
        self.spherical_aberration_in_mm = jnp.asarray(spherical_aberration_in_mm, dtype=float)

    def compute_aberration_phase_shifts(
        self,
        frequency_grid_in_angstroms: Float[Array, "y_dim x_dim 2"],
        wavelength_in_angstroms: Float[Array, ""] | float,
        defocus_offset: Float[Array, ""] | float | None = None,
    ) -> Float[Array, "y_dim x_dim"]:
        """See `AbstractCTF.compute_aberration_phase_shifts`."""
        grid = jnp.asarray(frequency_grid_in_angstroms)
        dtype = grid.dtype
        kx, ky = grid[..., 0], grid[..., 1]
        k2 = kx**2 + ky**2
        azimuth = jnp.arctan2(kx, ky)  # from the y axis, as cryojax
        wavelength = jnp.asarray(wavelength_in_angstroms, dtype=dtype)
        defocus = self.defocus_in_angstroms.astype(dtype)
        if defocus_offset is not None:
            defocus = defocus + jnp.asarray(defocus_offset, dtype=dtype)
        angle = jnp.deg2rad(self.astigmatism_angle.astype(dtype))
        dz = defocus + 0.5 * self.astigmatism_in_angstroms.astype(dtype) * jnp.cos(
            2.0 * (azimuth - angle)
        )
        cs = self.spherical_aberration_in_mm.astype(dtype) * 1e7  # mm to A
        return 2.0 * np.pi * (-0.5 * dz * wavelength * k2 + 0.25 * cs * wavelength**3 * k2**2)


class ContrastTransferTheory(eqx.Module, strict=True):
    """The weak-phase transfer of an object's spectrum to image contrast: the spectrum
    times the CTF and an optional envelope (e.g. `ndimage.FourierGaussian(b_factor=B)`,
    `exp(-B |k|^2 / 4)`, RELION's CTF B-factor)."""

    ctf: AbstractCTF
    envelope: AbstractFourierOperator | None
    amplitude_contrast_ratio: Float[Array, ""]
    phase_shift: Float[Array, ""]

    def __init__(
        self,
        ctf: AbstractCTF,
        envelope: AbstractFourierOperator | None = None,
        amplitude_contrast_ratio=0.1,
        phase_shift=0.0,
    ):
        """**Arguments:**

        - `ctf`: the CTF.
        - `envelope`: a Fourier operator multiplied in (2D frequencies in A^-1), or `None`.
        - `amplitude_contrast_ratio`: a fraction in [0, 1).
        - `phase_shift`: degrees.
        """
        self.ctf = ctf
        self.envelope = envelope
        self.amplitude_contrast_ratio = jnp.asarray(amplitude_contrast_ratio, dtype=float)
        self.phase_shift = jnp.asarray(phase_shift, dtype=float)

    def __call__(
        self,
        frequency_grid_in_angstroms: Float[Array, "y_dim x_dim 2"],
        voltage_in_kilovolts,
        defocus_offset=None,
    ) -> Float[Array, "y_dim x_dim"]:
        """The transfer function (CTF times envelope) on a frequency grid (A^-1).

        **Arguments:**

        - `frequency_grid_in_angstroms`: e.g. `make_frequency_grid((ny, nx), pixel_size)`.
        - `voltage_in_kilovolts`: the accelerating voltage, kV.
        - `defocus_offset`: A added to the defocus.
        """
        transfer = self.ctf(
            frequency_grid_in_angstroms,
            wavelength_in_angstroms(voltage_in_kilovolts),
            amplitude_contrast_ratio=self.amplitude_contrast_ratio,
            phase_shift=self.phase_shift,
            defocus_offset=defocus_offset,
        )
        if self.envelope is not None:
            transfer = transfer * self.envelope(frequency_grid_in_angstroms)
        return transfer

    def propagate_object(
        self,
        object_spectrum: Complex[Array, "y_dim x_dim//2+1"],
        image_shape: tuple[int, int],
        pixel_size,
        voltage_in_kilovolts,
        *,
        defocus_offset=None,
    ) -> Complex[Array, "y_dim x_dim//2+1"]:
        """The contrast spectrum: `object_spectrum` (the `rfftn` of the exit-plane phase
        shifts, zero frequency in the corner) times the transfer function.

        **Arguments:**

        - `object_spectrum`: shape `(ny, nx // 2 + 1)`.
        - `image_shape`: `(ny, nx)` of the real-space image.
        - `pixel_size`: A.
        - `voltage_in_kilovolts`: kV.
        - `defocus_offset`: A added to the defocus.
        """
        from ...coordinates import make_frequency_grid

        grid = make_frequency_grid(tuple(image_shape), pixel_size, outputs_rfftfreqs=True)
        grid = grid.astype(jnp.real(object_spectrum).dtype)
        return object_spectrum * self(grid, voltage_in_kilovolts, defocus_offset)
