"""Radially binned Fourier statistics: power spectra and Fourier ring/shell correlations.

Spectra are `rfftn`s (zero frequency in the corner) and radial grids their `|xi|`
(`make_radial_frequency_grid(shape, grid_spacing)`); frequencies are in A^-1 and the
bins are shells one Fourier pixel wide, `1 / (n * grid_spacing)` for the first axis' n.
"""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Complex, Float


def _bins(shape, grid_spacing, minimum_frequency, maximum_frequency):
    """Shell edges in A^-1 (a static count; traced spacing is fine)."""
    n = shape[0]
    width = 1.0 / n
    count = int(round((maximum_frequency - minimum_frequency) / width))
    count = max(count, 1)
    edges = minimum_frequency + width * jnp.arange(count + 1)
    return edges / grid_spacing


def _binned_mean(values, radial_grid, edges):
    index = jnp.digitize(radial_grid.ravel(), edges) - 1
    n_bins = edges.shape[0] - 1
    valid = (index >= 0) & (index < n_bins)
    index = jnp.where(valid, index, n_bins)
    sums = jax.ops.segment_sum(jnp.where(valid, values.ravel(), 0), index, n_bins + 1)[:-1]
    counts = jax.ops.segment_sum(valid.astype(float), index, n_bins + 1)[:-1]
    return sums / jnp.maximum(counts, 1.0)


def compute_binned_powerspectrum(
    fourier_image_or_volume: Complex[Array, "..."],
    radial_frequency_grid: Float[Array, "..."],
    pixel_or_voxel_size=1.0,
    *,
    minimum_frequency: float = 0.0,
    maximum_frequency: float = 2**0.5 / 2,
) -> tuple[Float[Array, " n_bins"], Float[Array, " n_bins"]]:
    """The mean `|F|^2` in frequency shells.

    **Arguments:**

    - `fourier_image_or_volume`: an `rfftn`.
    - `radial_frequency_grid`: its `|xi|` in A^-1, same shape.
    - `pixel_or_voxel_size`: in A.
    - `minimum_frequency`, `maximum_frequency`: the binned range in cycles per pixel.

    **Returns:**

    `(power_spectrum, frequency_bins)`: the mean per shell, and the shells' lower
    edges in A^-1.
    """
    edges = _bins(radial_frequency_grid.shape, pixel_or_voxel_size, minimum_frequency, maximum_frequency)
    power = jnp.abs(fourier_image_or_volume) ** 2
    return _binned_mean(power, radial_frequency_grid, edges), edges[:-1]


def _correlation(f1, f2, radial_grid, grid_spacing, threshold, minimum_frequency, maximum_frequency):
    edges = _bins(radial_grid.shape, grid_spacing, minimum_frequency, maximum_frequency)
    cross = _binned_mean(jnp.real(f1 * jnp.conj(f2)), radial_grid, edges)
    p1 = _binned_mean(jnp.abs(f1) ** 2, radial_grid, edges)
    p2 = _binned_mean(jnp.abs(f2) ** 2, radial_grid, edges)
    correlation = cross / jnp.sqrt(jnp.maximum(p1 * p2, jnp.finfo(p1.dtype).tiny))
    below = correlation < threshold
    # The first shell below the threshold; the last shell if none is.
    first = jnp.where(jnp.any(below), jnp.argmax(below), below.shape[0] - 1)
    frequencies = edges[:-1]
    return correlation, frequencies, frequencies[first]


def compute_fourier_ring_correlation(
    fourier_image_1: Complex[Array, "ny nx"],
    fourier_image_2: Complex[Array, "ny nx"],
    radial_frequency_grid: Float[Array, "ny nx"],
    pixel_size=1.0,
    threshold=0.5,
    *,
    minimum_frequency: float = 0.0,
    maximum_frequency: float = 2**0.5 / 2,
):
    """The Fourier ring correlation of two images.

    **Arguments:**

    - `fourier_image_1`, `fourier_image_2`: `rfftn`s of the images.
    - `radial_frequency_grid`: their `|xi|` in A^-1.
    - `pixel_size`: in A.
    - `threshold`: the correlation that defines the resolution.
    - `minimum_frequency`, `maximum_frequency`: the binned range in cycles per pixel.

    **Returns:**

    `(frc, frequencies, threshold_frequency)`: the curve, the rings' lower edges in
    A^-1, and the first ring whose correlation falls below `threshold`.
    """
    return _correlation(fourier_image_1, fourier_image_2, radial_frequency_grid, pixel_size,
                        threshold, minimum_frequency, maximum_frequency)


def compute_fourier_shell_correlation(
    fourier_volume_1: Complex[Array, "nz ny nx"],
    fourier_volume_2: Complex[Array, "nz ny nx"],
    radial_frequency_grid: Float[Array, "nz ny nx"],
    voxel_size=1.0,
    threshold=0.5,
    *,
    minimum_frequency: float = 0.0,
    maximum_frequency: float = 2**0.5 / 2,
):
    """The Fourier shell correlation of two volumes; see
    `compute_fourier_ring_correlation` (same arguments and returns, in 3D)."""
    return _correlation(fourier_volume_1, fourier_volume_2, radial_frequency_grid, voxel_size,
                        threshold, minimum_frequency, maximum_frequency)
