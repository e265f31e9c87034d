"""GaussianMixtureRenderFn: exact voxel averages of a GaussianMixtureVolume."""

import warnings
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Inexact

from ..errors import BatchOptionsError
from .gaussian_kernels import (
    SupportGroups,
    render_dense,
    render_local,
    support_groups,
    support_radii,
    window_size,
)
from .gaussian_mixture_volume import GaussianMixtureVolume
from .render_base import AbstractVolumeRenderFn, real_to_requested_space


_BATCH_KEYS = ("batch_size", "n_batches")


def _concrete(array) -> np.ndarray | None:
    """The value of an array, or None where it is traced (inside jit/vmap/grad)."""
    try:
        return np.asarray(array)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def _check_positive_int(options: dict, key: str, default):
    value = options.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise BatchOptionsError(
            f"GaussianMixtureRenderFn: batch_options['{key}'] must be a positive integer; "
            f"got {value!r}"
        )
    return int(value)


class GaussianMixtureRenderFn(AbstractVolumeRenderFn, strict=True):
    """Render a `GaussianMixtureVolume` to exact voxel averages.

    Voxel l holds `U_l = 1/(2 dr)^3 sum_i a_i prod_j [erf((r_j^l - r'_j + dr/2)/sqrt(2 s_i^2))
    - erf((r_j^l - r'_j - dr/2)/sqrt(2 s_i^2))]`, the average of the potential over the
    voxel, summed over atoms. Each atom is evaluated only on the cube of voxels within
    `support_radius` of it; by default that radius is the smallest for which, atom by
    atom, the L2 norm of what is dropped is at most `truncation` (1e-6 in float32) of the atom's own
    norm (see `cryoensemble.simulator.gaussian_kernels.support_radius`), so the cost
    scales with atoms x the local support, not atoms x grid.

    The radius is sized from the volume's variances, which must therefore be concrete. If
    they are traced (the volume is an argument of a `jit`-ed function) and no
    `support_radius` was given, every atom is evaluated on every voxel instead (exact,
    no truncation, much slower) and a warning says so: pass `support_radius` (e.g. from
    `render_fn.support_radius_for(volume)`) to keep the fast path under `jit`.

    Float32 by default; float64 where JAX x64 is on and the volume is float64.
    """

    shape: tuple[int, int, int] = eqx.field(static=True)
    voxel_size: Float[Array, ""]
    batch_size: int | None = eqx.field(static=True)
    n_batches: int = eqx.field(static=True)
    truncation: float | None = eqx.field(static=True)
    support_radius: float | None = eqx.field(static=True)
    support_groups: SupportGroups | None = eqx.field(static=True)
    voxel_size_value: float = eqx.field(static=True)

    def __init__(
        self,
        shape: tuple[int, int, int],
        voxel_size,
        *,
        batch_options: dict[str, Any] = {},
        truncation: float | None = None,
        support_radius: float | None = None,
        support_groups: SupportGroups | None = None,
    ):
        """**Arguments:**

        - `shape`: the grid shape (nz, ny, nx).
        - `voxel_size`: the voxel size in A.
        - `batch_options`: memory controls.
            - `"n_batches"`: atoms are split into this many groups, summed one after the
              other, so only n_atoms / n_batches atoms' intermediates (per-axis voxel
              masses, scatter indices where XLA does not fuse them) are in memory at
              once. Default 1.
            - `"batch_size"`: the number of z-planes rendered together. Default: all of
              them (the local evaluation needs no plane batching; a smaller value renders
              the grid in slabs of this many planes, each slab visiting every atom, which
              bounds the grid being accumulated but repeats work). On the dense fallback
              path the default is 1 plane per step, as in cryojax.
        - `truncation`: the relative L2 bound on what the local evaluation drops. Default:
          1e-6 for float32 volumes, 1e-12 for float64 ones (x64 users want the digits).
        - `support_radius`: the half-width in A of each atom's cube of voxels; overrides
          `truncation` and keeps the fast path when variances are traced.
        - `support_groups`: `((n_atoms, radius, k), ...)` for volumes whose atoms are sorted
          into contiguous groups of one window size (from `support_plan`); like
          `support_radius`, but a few wide atoms do not widen every window.
        """
        shape = tuple(int(s) for s in shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(
                f"GaussianMixtureRenderFn: shape must be three positive integers; got {shape}"
            )
        unknown = sorted(set(batch_options) - set(_BATCH_KEYS))
        if unknown:
            raise BatchOptionsError(
                f"GaussianMixtureRenderFn: unknown batch_options {unknown}; "
                f"allowed: {list(_BATCH_KEYS)}"
            )
        batch_size = _check_positive_int(batch_options, "batch_size", None)
        if batch_size is not None and batch_size > shape[0]:
            raise BatchOptionsError(
                f"GaussianMixtureRenderFn: batch_options['batch_size']={batch_size} exceeds "
                f"the {shape[0]} z-planes of the grid"
            )
        value = _concrete(voxel_size)
        if value is None or value.ndim != 0 or not np.isfinite(value) or value <= 0:
            raise ValueError(
                f"GaussianMixtureRenderFn: voxel_size must be a concrete positive scalar "
                f"(A); got {voxel_size!r}"
            )
        if truncation is not None and not (0 < truncation < 1):
            raise ValueError(
                f"GaussianMixtureRenderFn: truncation must be in (0, 1); got {truncation}"
            )
        if support_radius is not None and not support_radius > 0:
            raise ValueError(
                f"GaussianMixtureRenderFn: support_radius must be > 0 (A); got {support_radius}"
            )
        self.shape = shape
        self.voxel_size = jnp.asarray(voxel_size, dtype=float)
        self.voxel_size_value = float(value)
        self.batch_size = batch_size
        self.n_batches = _check_positive_int(batch_options, "n_batches", 1)
        self.truncation = None if truncation is None else float(truncation)
        self.support_radius = None if support_radius is None else float(support_radius)
        self.support_groups = (
            None if support_groups is None
            else tuple((int(n), float(r), int(k)) for n, r, k in support_groups)
        )

    @property
    def batch_options(self) -> dict[str, Any]:
        """The batching options as given (defaults filled in)."""
        return {"batch_size": self.batch_size, "n_batches": self.n_batches}

    def _truncation_for(self, dtype) -> float:
        if self.truncation is not None:
            return self.truncation
        return 1e-12 if dtype == np.float64 else 1e-6

    def support_plan(
        self, volume: GaussianMixtureVolume
    ) -> tuple[np.ndarray | None, SupportGroups] | None:
        """How `volume`'s atoms are windowed: `(order, groups)`, or None where the windows
        cannot be sized (variances traced and no support given).

        `order` (or None for the identity) sorts the atoms into the contiguous `groups`
        `((n_atoms, radius, k), ...)` of one window size each. To keep this fast path
        under `jit`, sort the atoms by `order` once and pass `support_groups=groups`.
        """
        n = volume.positions.shape[0]
        if self.support_groups is not None:
            return None, self.support_groups
        if self.support_radius is not None:
            radius = self.support_radius
            return None, ((n, radius, window_size(radius, self.voxel_size_value)),)
        amplitudes, variances = _concrete(volume.amplitudes), _concrete(volume.variances)
        if amplitudes is None or variances is None:
            return None
        radii = support_radii(
            amplitudes, variances, self.voxel_size_value, self._truncation_for(variances.dtype)
        )
        order, groups = support_groups(radii, self.voxel_size_value)
        return (None if len(groups) == 1 else order), groups

    def support_radius_for(self, volume: GaussianMixtureVolume) -> float | None:
        """The largest support radius (A) used for `volume`, or None if it cannot be sized."""
        plan = self.support_plan(volume)
        return None if plan is None else max(radius for _, radius, _ in plan[1])

    def _check(self, volume) -> GaussianMixtureVolume:
        if not isinstance(volume, GaussianMixtureVolume):
            raise TypeError(
                "GaussianMixtureRenderFn renders a GaussianMixtureVolume; got "
                f"{type(volume).__name__}"
            )
        n_atoms = volume.positions.shape[0]
        if self.n_batches > max(n_atoms, 1):
            raise BatchOptionsError(
                f"GaussianMixtureRenderFn: batch_options['n_batches']={self.n_batches} "
                f"exceeds the {n_atoms} positions of the volume"
            )
        return volume

    def render_slab(
        self, volume: GaussianMixtureVolume, z_start, z_size: int
    ) -> Float[Array, "z_size ny nx"]:
        """Render z-planes `[z_start, z_start + z_size)` of the grid only.

        Equals the same planes of the whole render (bit for bit on CPU), so a volume too
        large for one device can be rendered slab by slab. Needs a concrete support radius.
        """
        volume = self._check(volume)
        plan = self.support_plan(volume)
        if plan is None:
            raise ValueError(
                "GaussianMixtureRenderFn.render_slab: variances are traced; pass "
                "support_radius= or support_groups= when building the render fn"
            )
        order, groups = plan
        positions, amplitudes, variances = volume.positions, volume.amplitudes, volume.variances
        if order is not None:
            positions, amplitudes, variances = positions[order], amplitudes[order], variances[order]
        return render_local(
            positions,
            amplitudes,
            variances,
            self.shape,
            self.voxel_size.astype(positions.dtype),
            groups,
            z_start=z_start,
            z_size=int(z_size),
            n_batches=self.n_batches,
        )

    def __call__(
        self,
        volume_representation: GaussianMixtureVolume,
        *,
        outputs_real_space: bool = True,
        outputs_rfft: bool = False,
        fftshifted: bool = False,
    ) -> Inexact[Array, "nz ny nx"]:
        """Render the volume; see `AbstractVolumeRenderFn.__call__` for the arguments."""
        volume = self._check(volume_representation)
        voxel_size = self.voxel_size.astype(volume.positions.dtype)
        if self.support_plan(volume) is None:
            warnings.warn(
                "GaussianMixtureRenderFn: variances are traced, so every atom is evaluated "
                "on every voxel (slow); pass support_radius= to keep the local path",
                stacklevel=2,
            )
            real = render_dense(
                volume.positions,
                volume.amplitudes,
                volume.variances,
                self.shape,
                voxel_size,
                batch_size=self.batch_size or 1,
                n_batches=self.n_batches,
            )
        elif self.batch_size is None or self.batch_size >= self.shape[0]:
            real = self.render_slab(volume, 0, self.shape[0])
        else:
            nz, b = self.shape[0], self.batch_size
            n_steps = -(-nz // b)
            starts = jnp.arange(n_steps) * b
            # Slabs of b planes, the last one overlapping the end; cropped below.
            slabs = jax.lax.map(
                lambda z0: self.render_slab(volume, jnp.minimum(z0, nz - b), b), starts
            )
            real = jnp.concatenate(
                [slabs[:-1].reshape(-1, *self.shape[1:]), slabs[-1][b * n_steps - nz :]]
            )
        return real_to_requested_space(real, outputs_real_space, outputs_rfft, fftshifted)
