"""Particle images of gaussian mixtures (atoms), exact and local.

The line integral along z of a normalized 3D gaussian of variance s^2 is the 2D gaussian
of the same variance, so a posed atom projects to `sum_i a_i N2((x, y); (p_x, p_y), s_i^2)`.
Pixel j of an axis of n pixels covers [(j - n//2 - 1/2) d, (j - n//2 + 1/2) d]; its
average of the projection is separable, per axis
`(erf((x_hi - p) / (sqrt(2) s)) - erf((x_lo - p) / (sqrt(2) s))) / (2 d)`, as in the 3D
renderer. Each atom is evaluated only on a K x K window of pixels around it (K from a
truncation bound on the dropped mass), and the windows are scatter-added into the image:
the cost scales with atoms x K^2, not atoms x pixels.
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ...coordinates import make_frequency_grid
from .._transfer_theory import ContrastTransferTheory, interaction_constant_in_angstroms


def _erfcinv(value: float) -> float:
    """The z >= 0 with erfc(z) = value, for value in (0, 1], by bisection."""
    low, high = 0.0, 30.0
    for _ in range(100):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if math.erfc(middle) > value else (low, middle)
    return high


def projection_window(variances, pixel_size: float, truncation: float = 1e-6) -> int:
    """Pixels per axis of the window that holds all but a fraction `truncation` of the
    mass of every gaussian along each axis.

    **Arguments:**

    - `variances`: concrete variances in A^2, any shape.
    - `pixel_size`: A.
    - `truncation`: the largest dropped fraction of a gaussian's mass per axis.
    """
    variances = np.asarray(variances, dtype=np.float64)
    if variances.size == 0 or not np.all(np.isfinite(variances)) or np.any(variances <= 0):
        raise ValueError("projection_window: variances must be finite and > 0")
    if not 0 < truncation < 1:
        raise ValueError(f"projection_window: truncation must be in (0, 1); got {truncation}")
    radius = float(np.sqrt(2.0 * variances.max()) * _erfcinv(truncation))
    return int(np.ceil(2.0 * radius / pixel_size - 1e-9)) + 1


def project_gaussian_mixture(
    positions: Float[Array, "n 3"],
    amplitudes: Float[Array, "n g"],
    variances: Float[Array, "n g"],
    shape: tuple[int, int],
    pixel_size: float,
    window: int,
) -> Float[Array, "ny nx"]:
    """The projection along z of a gaussian mixture, averaged over each pixel (A^-1).

    **Arguments:**

    - `positions`: (x, y, z) in A (already posed); z is ignored.
    - `amplitudes`: A; `variances`: A^2; shape `(n, g)`.
    - `shape`: the image shape (ny, nx).
    - `pixel_size`: A.
    - `window`: pixels per axis evaluated around each atom (`projection_window`).
    """
    ny, nx = shape
    dtype = positions.dtype
    d = jnp.asarray(pixel_size, dtype)
    k = int(window)
    scale = jnp.sqrt(2.0 * variances.astype(dtype))[:, :, None]  # (n, g, 1)
    steps = jnp.arange(k, dtype=jnp.int32)

    def axis_profile(coordinate, n):
        # Pixel units from the centre pixel: small numbers, so float32 keeps the
        # positions' low bits.
        u = coordinate / d + n // 2
        first = jnp.floor(u - (k - 1) / 2.0 + 0.5).astype(jnp.int32)
        # Windows wholly outside the image are moved into the padding (their values,
        # computed where they land, are those pixels' true, negligible, values).
        first = jnp.clip(first, -k, n)
        offset = ((first[:, None] + steps[None, :]).astype(dtype) - u[:, None]) * d
        offset = offset[:, None, :]  # (n, 1, k)
        mass = jax.lax.erf((offset + d / 2) / scale) - jax.lax.erf((offset - d / 2) / scale)
        return first + k, 0.5 * mass / d  # index into the padded image, (n, g, k)

    iy, py = axis_profile(positions[:, 1], ny)
    ix, px = axis_profile(positions[:, 0], nx)
    # Sum of g outer products per atom, written out: XLA's CPU batched matmul of such
    # small blocks is several times slower than the fused elementwise form.
    amplitudes = amplitudes.astype(dtype)
    blocks = sum(
        amplitudes[:, i, None, None] * py[:, i, :, None] * px[:, i, None, :]
        for i in range(amplitudes.shape[1])
    )
    # Each atom's block is one window of the scatter: XLA adds it as a (k, k) slice.
    starts = jnp.stack([iy, ix], axis=-1)  # (n, 2)
    numbers = jax.lax.ScatterDimensionNumbers(
        update_window_dims=(1, 2), inserted_window_dims=(), scatter_dims_to_operand_dims=(0, 1)
    )
    padded = jax.lax.scatter_add(
        jnp.zeros((ny + 2 * k, nx + 2 * k), dtype), starts, blocks, numbers,
        indices_are_sorted=False, unique_indices=False,
        mode=jax.lax.GatherScatterMode.PROMISE_IN_BOUNDS,
    )
    return padded[k : k + ny, k : k + nx]


def add_white_noise(
    image: Float[Array, "ny nx"], snr, key: PRNGKeyArray
) -> tuple[Float[Array, "ny nx"], Float[Array, ""]]:
    """White gaussian noise of standard deviation `std(image) / sqrt(snr)` (the SNR as
    the ratio of the image's variance over the box to the noise variance).

    **Returns:** `(noisy image, noise standard deviation)`.
    """
    sigma = jnp.std(image) / jnp.sqrt(jnp.asarray(snr, image.dtype))
    return image + sigma * jax.random.normal(key, image.shape, image.dtype), sigma


class GaussianMixtureImageModel(eqx.Module, strict=True):
    """Images of one set of atoms (a gaussian mixture per atom), any conformation and
    pose: the exact pixel-averaged projection, times the interaction constant (the
    exit-wave phase shift, rad), optionally transferred by a CTF (image contrast).

    Poses act as cryojax's: positions `r' = R r + t`, with the in-plane offset t in A.
    """

    amplitudes: Float[Array, "n g"]
    variances: Float[Array, "n g"]
    shape: tuple[int, int] = eqx.field(static=True)
    pixel_size: float = eqx.field(static=True)
    voltage_in_kilovolts: float = eqx.field(static=True)
    window: int = eqx.field(static=True)

    def __init__(
        self,
        amplitudes,
        variances,
        shape: tuple[int, int],
        pixel_size: float,
        voltage_in_kilovolts: float = 300.0,
        *,
        truncation: float = 1e-6,
    ):
        """**Arguments:**

        - `amplitudes`, `variances`: concrete `(n_atoms, n_gaussians)` arrays in A and
          A^2 (e.g. of `GaussianMixtureVolume.from_tabulated_parameters`).
        - `shape`: the image shape (ny, nx).
        - `pixel_size`: A.
        - `voltage_in_kilovolts`: kV (the interaction constant and the CTF's wavelength).
        - `truncation`: the mass fraction per axis a gaussian may drop outside its window.
        """
        shape = tuple(int(s) for s in np.broadcast_to(np.asarray(shape), (2,)))
        if min(shape) < 1:
            raise ValueError(f"GaussianMixtureImageModel: shape must be positive; got {shape}")
        if not pixel_size > 0:
            raise ValueError(f"GaussianMixtureImageModel: pixel_size must be > 0; got {pixel_size}")
        if not voltage_in_kilovolts > 0:
            raise ValueError(
                "GaussianMixtureImageModel: voltage_in_kilovolts must be > 0; got "
                f"{voltage_in_kilovolts}"
            )
        self.amplitudes = jnp.asarray(amplitudes)
        self.variances = jnp.asarray(variances)
        if self.amplitudes.shape != self.variances.shape or self.amplitudes.ndim != 2:
            raise ValueError(
                "GaussianMixtureImageModel: amplitudes and variances must both be "
                f"(n_atoms, n_gaussians); got {self.amplitudes.shape} and {self.variances.shape}"
            )
        self.shape = shape
        self.pixel_size = float(pixel_size)
        self.voltage_in_kilovolts = float(voltage_in_kilovolts)
        self.window = projection_window(np.asarray(variances), self.pixel_size, truncation)

    def project(
        self, positions: Float[Array, "n 3"], rotation: Float[Array, "3 3"],
        offset: Float[Array, "2"],
    ) -> Float[Array, "ny nx"]:
        """The projection (A^-1) of the atoms at `positions` (A), rotated by `rotation`
        (acting on column vectors) and moved in-plane by `offset` (A)."""
        dtype = positions.dtype
        posed = jnp.matmul(positions, rotation.T.astype(dtype), precision=jax.lax.Precision.HIGHEST)
        posed = posed.at[:, :2].add(offset.astype(dtype))
        return project_gaussian_mixture(
            posed, self.amplitudes, self.variances, self.shape, self.pixel_size, self.window
        )

    def __call__(
        self,
        positions: Float[Array, "n 3"],
        rotation: Float[Array, "3 3"],
        offset: Float[Array, "2"],
        transfer_theory: ContrastTransferTheory | None = None,
    ) -> Float[Array, "ny nx"]:
        """The noiseless image: `sigma_e` times the projection, transferred by
        `transfer_theory` if given (periodic boundaries, as cryojax without padding)."""
        projection = self.project(positions, rotation, offset)
        return phase_contrast_image(projection, self.pixel_size, self.voltage_in_kilovolts,
                                    transfer_theory)


def phase_contrast_image(
    projection: Float[Array, "ny nx"],
    pixel_size: float,
    voltage_in_kilovolts: float,
    transfer_theory: ContrastTransferTheory | None = None,
    offset: Float[Array, "2"] | None = None,
) -> Float[Array, "ny nx"]:
    """A projection (A^-1) to an image: times the interaction constant (the exit-wave
    phase shift, rad), moved in-plane by `offset` (A, a Fourier phase: periodic, for
    band-limited projections), and transferred by `transfer_theory` if given (periodic
    boundaries, as cryojax without padding).
    """
    dtype = projection.dtype
    shape = projection.shape
    phase = interaction_constant_in_angstroms(voltage_in_kilovolts).astype(dtype) * projection
    if transfer_theory is None and offset is None:
        return phase
    spectrum = jnp.fft.rfftn(phase)
    grid = make_frequency_grid(shape, pixel_size, outputs_rfftfreqs=True).astype(dtype)
    if offset is not None:
        offset = offset.astype(dtype)
        # Elementwise, not a matmul: TF32 on GPUs would round the phases.
        phase_ramp = grid[..., 0] * offset[0] + grid[..., 1] * offset[1]
        spectrum = spectrum * jnp.exp(-2j * jnp.pi * phase_ramp)
    if transfer_theory is not None:
        spectrum = spectrum * transfer_theory(grid, voltage_in_kilovolts).astype(dtype)
    return jnp.fft.irfftn(spectrum, s=shape)
