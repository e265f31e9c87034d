"""GaussianMixtureRenderFn: exact voxel averages of a GaussianMixtureVolume."""

import warnings
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Inexact

from ...coordinates import as_grid_shape
from ...errors import BatchOptionsError
from ._gaussian_kernels import SCATTER_STRATEGIES, render_dense, render_local
from .._volume.gaussian_mixture import GaussianMixtureVolume
from .base_rendering import AbstractVolumeRenderFn, real_to_requested_space
from .support_plan import ConcreteMixture, SupportPlan


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


class GaussianMixtureRenderFn(AbstractVolumeRenderFn):
    """Render a `GaussianMixtureVolume` to exact voxel averages.

    Voxel l holds `U_l = 1/(2 dr)^3 sum_i a_i prod_j [erf((r_j^l - r'_j + dr/2)/sqrt(2 s_i^2))
    - erf((r_j^l - r'_j - dr/2)/sqrt(2 s_i^2))]`, the average of the potential over the
    voxel, summed over atoms. Each atom is evaluated only on the cube of voxels around it
    that its `SupportPlan` gives: by default the smallest radius for which, atom by atom,
    the L2 norm of what is dropped is at most `truncation` (1e-6 in float32) of the atom's
    own norm (see `support_radii`), so the cost scales with atoms x the local support, not
    atoms x grid.

    The plan is sized from concrete amplitudes and variances, once: it is held by the
    renderer (`support_plan=`, `for_volume`) or by a volume built outside `jit`, so
    `jax.jit(lambda v: render(v))(volume)` keeps the local path. Only where neither holds
    one and the variances are traced is every atom evaluated on every voxel (exact, no
    truncation, much slower), with a warning.

    Float32 by default; float64 where JAX x64 is on and the volume is float64.
    """

    shape: tuple[int, int, int] = eqx.field(static=True)
    voxel_size: Float[Array, ""]
    batch_size: int | None = eqx.field(static=True)
    n_batches: int = eqx.field(static=True)
    truncation: float | None = eqx.field(static=True)
    support_radius: float | None = eqx.field(static=True)
    support_plan: SupportPlan | None
    scatter: str = eqx.field(static=True)
    voxel_size_value: float = eqx.field(static=True)

    def __init__(
        self,
        shape: tuple[int, int, int],
        voxel_size,
        *,
        batch_options: dict[str, Any] = {},
        truncation: float | None = None,
        support_radius: float | None = None,
        support_plan: SupportPlan | None = None,
        scatter: str = "auto",
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
        - `support_radius`: the half-width in A of every atom's cube of voxels; overrides
          `truncation` and keeps the fast path when variances are traced.
        - `support_plan`: the `SupportPlan` of the volumes this renderer will render
          (see `for_volume`); overrides `truncation` and `support_radius`.
        - `scatter`: how each atom's window is added into the grid: `"voxels"` (voxel by
          voxel), `"rows"` (row by row into a padded grid), `"windows"` (whole windows),
          or `"auto"` ("voxels" on GPUs, "rows" elsewhere). The result is the same.
        """
        shape = as_grid_shape(shape, "GaussianMixtureRenderFn: shape")
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
        if support_plan is not None and not isinstance(support_plan, SupportPlan):
            raise TypeError(
                "GaussianMixtureRenderFn: support_plan must be a SupportPlan; got "
                f"{type(support_plan).__name__}"
            )
        if scatter not in SCATTER_STRATEGIES:
            raise ValueError(
                f"GaussianMixtureRenderFn: scatter must be one of {SCATTER_STRATEGIES}; "
                f"got {scatter!r}"
            )
        self.shape = shape
        self.voxel_size = jnp.asarray(voxel_size, dtype=float)
        self.voxel_size_value = float(value)
        self.batch_size = batch_size
        self.n_batches = _check_positive_int(batch_options, "n_batches", 1)
        self.truncation = None if truncation is None else float(truncation)
        self.support_radius = None if support_radius is None else float(support_radius)
        self.support_plan = support_plan
        self.scatter = scatter

    @property
    def batch_options(self) -> dict[str, Any]:
        """The batching options as given (defaults filled in)."""
        return {"batch_size": self.batch_size, "n_batches": self.n_batches}

    def for_volume(self, volume: GaussianMixtureVolume) -> "GaussianMixtureRenderFn":
        """This renderer holding `volume`'s support plan (sized now, from its concrete
        amplitudes and variances), for volumes of the same mixture rendered under `jit`."""
        plan = self.plan_for(volume)
        if plan is None:
            raise ValueError(
                "GaussianMixtureRenderFn.for_volume: the volume's variances are traced; "
                "call it outside jit"
            )
        return eqx.tree_at(lambda r: r.support_plan, self, plan, is_leaf=lambda x: x is None)

    def plan_for(self, volume: GaussianMixtureVolume) -> SupportPlan | None:
        """How `volume`'s atoms are windowed, or None where the windows cannot be sized
        (variances traced, and neither the renderer nor the volume holds a plan)."""
        n = volume.positions.shape[0]
        if self.support_plan is not None:
            if self.support_plan.n_atoms != n:
                raise ValueError(
                    f"GaussianMixtureRenderFn: the support plan covers "
                    f"{self.support_plan.n_atoms} atoms, the volume has {n}"
                )
            return self.support_plan
        if self.support_radius is not None:
            return SupportPlan.from_radius(n, self.support_radius, self.voxel_size_value)
        mixture = volume.concrete_mixture
        if mixture is None or not mixture.describes(volume.amplitudes, volume.variances):
            mixture = ConcreteMixture.of(volume.amplitudes, volume.variances)
        if mixture is None:
            return None
        return mixture.plan(self.voxel_size_value, self.truncation)

    def support_radius_for(self, volume: GaussianMixtureVolume) -> float | None:
        """The largest support radius (A) used for `volume`, or None if it cannot be sized."""
        plan = self.plan_for(volume)
        return None if plan is None else plan.radius

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

    def _render_planes(self, volume: GaussianMixtureVolume, plan: SupportPlan, z_start,
                       z_size: int) -> Float[Array, "z_size ny nx"]:
        positions, amplitudes, variances = volume.positions, volume.amplitudes, volume.variances
        if plan.order is not None:
            order = jnp.asarray(plan.order)
            positions, amplitudes, variances = positions[order], amplitudes[order], variances[order]
        return render_local(
            positions, amplitudes, variances, self.shape,
            self.voxel_size.astype(positions.dtype), plan.groups, z_start=z_start,
            z_size=int(z_size), n_batches=self.n_batches, scatter=self.scatter,
        )

    def render_slab(
        self, volume: GaussianMixtureVolume, z_start, z_size: int
    ) -> Float[Array, "z_size ny nx"]:
        """Render z-planes `[z_start, z_start + z_size)` of the grid only.

        Equals the same planes of the whole render (bit for bit on CPU), so a volume too
        large for one device can be rendered slab by slab (`atoms_touching_planes` says
        which atoms each slab needs). Needs a support plan.
        """
        volume = self._check(volume)
        plan = self.plan_for(volume)
        if plan is None:
            raise ValueError(
                "GaussianMixtureRenderFn.render_slab: variances are traced; build the "
                "volume outside jit, or pass support_plan= (see for_volume) or support_radius="
            )
        return self._render_planes(volume, plan, z_start, z_size)

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
        plan = self.plan_for(volume)
        if plan is None:
            warnings.warn(
                "GaussianMixtureRenderFn: variances are traced and no support plan is held, "
                "so every atom is evaluated on every voxel (slow); build the volume outside "
                "jit or use render_fn.for_volume(volume) to keep the local path",
                stacklevel=2,
            )
            real = render_dense(
                volume.positions,
                volume.amplitudes,
                volume.variances,
                self.shape,
                self.voxel_size.astype(volume.positions.dtype),
                batch_size=self.batch_size or 1,
                n_batches=self.n_batches,
            )
        elif self.batch_size is None or self.batch_size >= self.shape[0]:
            real = self._render_planes(volume, plan, 0, self.shape[0])
        else:
            nz, b = self.shape[0], self.batch_size
            n_steps = -(-nz // b)
            starts = jnp.arange(n_steps) * b
            # Slabs of b planes, the last one overlapping the end; cropped below.
            slabs = jax.lax.map(
                lambda z0: self._render_planes(volume, plan, jnp.minimum(z0, nz - b), b), starts
            )
            real = jnp.concatenate(
                [slabs[:-1].reshape(-1, *self.shape[1:]), slabs[-1][b * n_steps - nz :]]
            )
        return real_to_requested_space(real, outputs_real_space, outputs_rfft, fftshifted)
