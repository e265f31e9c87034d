"""The imaging configuration: image shape, pixel size, beam voltage (cryojax's API).

Projections (`AbstractVolumeIntegrator.integrate`) are computed at `padded_shape` and
`pixel_size`; pixel j of an axis of length n sits at (j - n // 2) * pixel_size, and
spectra are `cryoensemble.ndimage.rfftn`s (phases about that origin pixel).
"""

from typing import Literal

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..constants.physical_constants import (
    interaction_constant_from_kilovolts,
    lorentz_factor_from_kilovolts,
    wavelength_from_kilovolts,
)
from ..coordinates import make_coordinate_grid, make_frequency_grid


def _image_shape(shape, what: str) -> tuple[int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"BasicImageConfig: {what} must be two positive integers (ny, nx); got {shape}")
    return shape


class AbstractImageConfig(eqx.Module):
    """What an image is computed on: its grid and the beam."""

    shape: eqx.AbstractVar[tuple[int, int]]
    padded_shape: eqx.AbstractVar[tuple[int, int]]
    pixel_size: eqx.AbstractVar[Float[Array, ""]]
    voltage_in_kilovolts: eqx.AbstractVar[Float[Array, ""]]

    @property
    def wavelength_in_angstroms(self) -> Float[Array, ""]:
        """The relativistic electron wavelength, A."""
        return wavelength_from_kilovolts(self.voltage_in_kilovolts)

    @property
    def lorentz_factor(self) -> Float[Array, ""]:
        """The Lorentz factor of the beam electrons."""
        return lorentz_factor_from_kilovolts(self.voltage_in_kilovolts)

    @property
    def interaction_constant(self) -> Float[Array, ""]:
        """The interaction constant, A (phase = constant x projected potential)."""
        return interaction_constant_from_kilovolts(self.voltage_in_kilovolts)

    def get_coordinate_grid(self, *, padding: bool = False, physical: bool = True) -> Float[Array, "ny nx 2"]:
        """Pixel-centre coordinates (x, y).

        **Arguments:**

        - `padding`: on `padded_shape` instead of `shape`.
        - `physical`: in A; otherwise in pixels.
        """
        shape = self.padded_shape if padding else self.shape
        grid = make_coordinate_grid(shape)
        return grid * self.pixel_size if physical else grid

    def get_frequency_grid(
        self, *, padding: bool = False, physical: bool = True, full: bool = False
    ) -> Float[Array, "ny nx 2"]:
        """Frequencies (xi_x, xi_y), zero in the corner.

        **Arguments:**

        - `padding`: on `padded_shape` instead of `shape`.
        - `physical`: in A^-1; otherwise in cycles per pixel.
        - `full`: the whole plane (for `fftn`) instead of the `rfftn` half plane.
        """
        shape = self.padded_shape if padding else self.shape
        grid = make_frequency_grid(shape, outputs_rfftfreqs=not full)
        return grid / self.pixel_size if physical else grid

    @property
    def n_pixels(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def y_dim(self) -> int:
        return self.shape[0]

    @property
    def x_dim(self) -> int:
        return self.shape[1]

    @property
    def padded_y_dim(self) -> int:
        return self.padded_shape[0]

    @property
    def padded_x_dim(self) -> int:
        return self.padded_shape[1]

    @property
    def padded_n_pixels(self) -> int:
        return self.padded_shape[0] * self.padded_shape[1]

    @property
    def coordinate_grid_in_pixels(self) -> Float[Array, "ny nx 2"]:
        return self.get_coordinate_grid(physical=False)

    @property
    def coordinate_grid_in_angstroms(self) -> Float[Array, "ny nx 2"]:
        return self.get_coordinate_grid()

    @property
    def frequency_grid_in_pixels(self) -> Float[Array, "ny nx//2+1 2"]:
        return self.get_frequency_grid(physical=False)

    @property
    def frequency_grid_in_angstroms(self) -> Float[Array, "ny nx//2+1 2"]:
        return self.get_frequency_grid()

    @property
    def full_frequency_grid_in_pixels(self) -> Float[Array, "ny nx 2"]:
        return self.get_frequency_grid(physical=False, full=True)

    @property
    def full_frequency_grid_in_angstroms(self) -> Float[Array, "ny nx 2"]:
        return self.get_frequency_grid(full=True)

    @property
    def padded_coordinate_grid_in_pixels(self) -> Float[Array, "py px 2"]:
        return self.get_coordinate_grid(padding=True, physical=False)

    @property
    def padded_coordinate_grid_in_angstroms(self) -> Float[Array, "py px 2"]:
        return self.get_coordinate_grid(padding=True)

    @property
    def padded_frequency_grid_in_pixels(self) -> Float[Array, "py px//2+1 2"]:
        return self.get_frequency_grid(padding=True, physical=False)

    @property
    def padded_frequency_grid_in_angstroms(self) -> Float[Array, "py px//2+1 2"]:
        return self.get_frequency_grid(padding=True)

    @property
    def padded_full_frequency_grid_in_pixels(self) -> Float[Array, "py px 2"]:
        return self.get_frequency_grid(padding=True, physical=False, full=True)

    @property
    def padded_full_frequency_grid_in_angstroms(self) -> Float[Array, "py px 2"]:
        return self.get_frequency_grid(padding=True, full=True)


class BasicImageConfig(AbstractImageConfig):
    """The grid of an image and the beam's voltage (cryojax's `BasicImageConfig`)."""

    shape: tuple[int, int] = eqx.field(static=True)
    pixel_size: Float[Array, ""]
    voltage_in_kilovolts: Float[Array, ""]
    padded_shape: tuple[int, int] = eqx.field(static=True)
    precompute_mode: Literal["none", "rfft", "fft", "all", "compile_time_eval"] = eqx.field(static=True)

    def __init__(
        self,
        shape: tuple[int, int],
        pixel_size,
        voltage_in_kilovolts=300.0,
        *,
        padded_shape: tuple[int, int] | None = None,
        pad_scale: float = 1.0,
        precompute_mode: Literal["none", "rfft", "fft", "all", "compile_time_eval"] = "none",
        pad_options: dict = {},
    ):
        """**Arguments:**

        - `shape`: the image shape (ny, nx) in pixels.
        - `pixel_size`: in A.
        - `voltage_in_kilovolts`: the accelerating voltage, kV.
        - `padded_shape`: the shape projections are computed at (default `shape`).
        - `pad_scale`: cryojax 0.6's alternative, `padded_shape = int(pad_scale * shape)`.
        - `precompute_mode`: accepted for cryojax compatibility; grids are computed when
          asked for (under `jit` they are compile-time constants anyway).
        - `pad_options`: cryojax's deprecated spelling, `{"shape": padded_shape}`.
        """
        if "shape" in pad_options:
            padded_shape = pad_options["shape"]
        self.shape = _image_shape(shape, "shape")
        if padded_shape is None and pad_scale != 1.0:
            if not pad_scale >= 1.0:
                raise ValueError(f"BasicImageConfig: pad_scale must be >= 1; got {pad_scale}")
            padded_shape = tuple(int(pad_scale * n) for n in self.shape)
        self.padded_shape = self.shape if padded_shape is None else _image_shape(padded_shape, "padded_shape")
        if self.padded_shape[0] < self.shape[0] or self.padded_shape[1] < self.shape[1]:
            raise ValueError(
                f"BasicImageConfig: padded_shape {self.padded_shape} is smaller than shape {self.shape}"
            )
        if precompute_mode not in ("none", "rfft", "fft", "all", "compile_time_eval"):
            raise ValueError(f"BasicImageConfig: unknown precompute_mode {precompute_mode!r}")
        self.precompute_mode = precompute_mode
        self.pixel_size = jnp.asarray(pixel_size, dtype=float)
        self.voltage_in_kilovolts = jnp.asarray(voltage_in_kilovolts, dtype=float)
