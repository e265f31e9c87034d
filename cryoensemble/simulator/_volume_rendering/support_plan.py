"""How a gaussian mixture's atoms are windowed: the support plan, computed once.

`GaussianMixtureRenderFn` evaluates each atom on a k^3 cube of voxels around it, k sized
from the atom's amplitudes and variances (`support_radii`). Sizing needs concrete values,
so the plan is a value computed once outside `jit` and then held: by the renderer
(`GaussianMixtureRenderFn.for_volume`, `support_plan=`) or, for the way cryojax users
call a renderer (`jax.jit(lambda v: render(v))(volume)`), by the volume itself, which
keeps a host-side view of its own mixture (`ConcreteMixture`) as static metadata.
"""

import hashlib

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from ._gaussian_kernels import (
    SupportGroups,
    distinct_rows,
    support_groups,
    support_radii,
    touches_planes,
    voxel_offsets,
    window_size,
    window_starts,
)


def default_truncation(dtype) -> float:
    """The relative L2 bound used when none is given: 1e-6 in float32, 1e-12 in float64."""
    return 1e-12 if np.dtype(dtype) == np.float64 else 1e-6


class SupportPlan(eqx.Module):
    """Atoms sorted into contiguous groups of one window size.

    - `order`: the permutation (of the volume's atoms) that makes each group contiguous,
      or None when the atoms are already in plan order.
    - `groups`: `((n_atoms, radius in A, k), ...)`, in order; each group's k^3 windows
      cover `radius` around its atoms.
    """

    order: Int[np.ndarray, " n_atoms"] | None
    groups: SupportGroups = eqx.field(static=True)

    def __init__(self, order, groups):
        self.order = None if order is None else np.asarray(order, np.int64)
        self.groups = tuple((int(n), float(r), int(k)) for n, r, k in groups)

    @classmethod
    def from_mixture(
        cls,
        amplitudes: np.ndarray,
        variances: np.ndarray,
        voxel_size: float,
        truncation: float,
        rows_of_atoms: np.ndarray | None = None,
    ) -> "SupportPlan":
        """The plan of a concrete mixture: each atom's radius from `truncation`, atoms
        grouped by window size (a few wide atoms do not widen every window).

        **Arguments:**

        - `amplitudes`, `variances`: `(n, n_gaussians)` in A and A^2: per atom, or with
          `rows_of_atoms` per distinct row (millions of atoms of a few elements).
        - `voxel_size`: in A. `truncation`: the relative L2 bound (see `support_radii`).
        - `rows_of_atoms`: each atom's index into the rows, if the rows are distinct ones.
        """
        a = np.asarray(amplitudes, np.float64)
        v = np.asarray(variances, np.float64)
        if rows_of_atoms is None and a.size:
            # Sized once per distinct row (per element), then mapped back to the atoms.
            table, rows_of_atoms = distinct_rows(np.concatenate([a, v], axis=1))
            a, v = table[:, : a.shape[1]], table[:, a.shape[1] :]
        radii = support_radii(a, v, float(voxel_size), float(truncation))
        order, groups = support_groups(radii, float(voxel_size), rows_of_atoms=rows_of_atoms)
        return cls(None if len(groups) <= 1 else order, groups)

    @classmethod
    def from_radius(cls, n_atoms: int, radius: float, voxel_size: float) -> "SupportPlan":
        """One window size, `radius` (A) around every atom, atoms in their own order."""
        return cls(None, ((int(n_atoms), float(radius), window_size(radius, float(voxel_size))),))

    @property
    def n_atoms(self) -> int:
        return sum(n for n, _, _ in self.groups)

    @property
    def radius(self) -> float:
        """The largest radius (A) of any group."""
        return max([r for _, r, _ in self.groups] + [0.0])

    @property
    def k_max(self) -> int:
        """The largest window (voxels per axis)."""
        return max([k for _, _, k in self.groups] + [1])


# `window_first_planes` of an atom whose window misses the grid's y/x extent: below any
# plane by more than any window, so it touches no slab.
MISSES_GRID = -(2**30)


def window_first_planes(
    positions: Float[Array, "n_atoms 3"],
    shape: tuple[int, int, int],
    voxel_size: float,
    plan: SupportPlan,
) -> Int[Array, " n_atoms"]:
    """The first z-plane (absolute grid index) of each atom's window, computed with the
    kernel's own float32 arithmetic (`window_starts`), or `MISSES_GRID` for an atom whose
    window misses the grid's y/x extent. An atom of a group of window k adds into planes
    `[z0, z1)` exactly when `first + k > z0` and `first < z1` (`touches_planes`): computed
    once per conformation, this answers every slab's selection with two comparisons.
    Traceable (for use inside `jit`).

    **Arguments:** as for `atoms_touching_planes` (`positions` already in plan order).
    """
    positions = jnp.asarray(positions, jnp.float32)
    if positions.shape[0] != plan.n_atoms:
        raise ValueError(
            f"window_first_planes: {positions.shape[0]} positions, the plan covers {plan.n_atoms}"
        )
    voxel_size = jnp.asarray(voxel_size, positions.dtype)
    offsets = voxel_offsets(positions, voxel_size)
    shape = tuple(shape)
    firsts, first = [], 0
    for count, radius, k in plan.groups:
        start = window_starts(offsets[first : first + count], shape, radius, voxel_size)
        # The y/x half of `touches_planes` (the z half is left to each slab).
        across = jnp.all((start[:, 1:] + k > 0) & (start[:, 1:] < jnp.asarray(shape[1:])), axis=1)
        firsts.append(jnp.where(across, start[:, 0], jnp.int32(MISSES_GRID)))
        first += count
    return jnp.concatenate(firsts) if firsts else jnp.zeros(0, jnp.int32)


def touching_planes_mask(
    first_planes: Int[Array, " n_atoms"], plan: SupportPlan, z0, z1
) -> Bool[Array, " n_atoms"]:
    """Which atoms meet z-planes `[z0, z1)`, from their `window_first_planes`; traceable,
    `z0` and `z1` may be traced (one compiled selection serves every slab)."""
    z0, z1 = jnp.asarray(z0, jnp.int32), jnp.asarray(z1, jnp.int32)
    masks, first = [], 0
    for count, _, k in plan.groups:
        planes = first_planes[first : first + count]
        masks.append((planes + k > z0) & (planes < z1))
        first += count
    return jnp.concatenate(masks) if masks else jnp.zeros(0, bool)


@eqx.filter_jit
def _touching(positions, voxel_size, shape, groups, z0, z1):
    plan = SupportPlan(None, groups)
    return touching_planes_mask(window_first_planes(positions, shape, voxel_size, plan), plan,
                                z0, z1)


def atoms_touching_planes(
    positions: Float[Array, "n_atoms 3"],
    shape: tuple[int, int, int],
    voxel_size: float,
    plan: SupportPlan,
    z0: int,
    z1: int,
) -> Bool[np.ndarray, " n_atoms"]:
    """Which atoms' windows meet z-planes `[z0, z1)` of the grid `shape`: exactly the
    atoms `GaussianMixtureRenderFn` adds into those planes, computed with the kernel's own
    float32 arithmetic (`window_starts`, `touches_planes`), so a slab rendered from these
    atoms alone equals the same planes of the whole volume.

    **Arguments:**

    - `positions`: (x, y, z) in A of atoms already in plan order (`plan.order` applied).
    - `shape`: the grid (nz, ny, nx); `voxel_size` in A.
    - `plan`: the support plan of these atoms.
    - `z0`, `z1`: the planes.
    """
    positions = jnp.asarray(positions, jnp.float32)
    if positions.shape[0] != plan.n_atoms:
        raise ValueError(
            f"atoms_touching_planes: {positions.shape[0]} positions, the plan covers {plan.n_atoms}"
        )
    voxel_size = jnp.asarray(voxel_size, positions.dtype)
    return np.asarray(_touching(positions, voxel_size, tuple(shape), plan.groups,
                                jnp.int32(z0), jnp.int32(z1)))


class ConcreteMixture:
    """A volume's own amplitudes and variances as concrete arrays, held as static metadata
    so that its support plan can be sized even where the volume is traced.

    Compared and hashed by content (a digest computed on first use), so volumes of one
    mixture share compiled code. Plans are cached per (voxel size, truncation), a few.
    """

    _MAX_PLANS = 4

    def __init__(self, amplitudes: Array, variances: Array):
        self.amplitudes = amplitudes
        self.variances = variances
        self._digest: bytes | None = None
        self._plans: dict = {}

    @classmethod
    def of(cls, amplitudes, variances) -> "ConcreteMixture | None":
        """The concrete view of a mixture, or None where either array is traced."""
        if isinstance(amplitudes, jax.core.Tracer) or isinstance(variances, jax.core.Tracer):
            return None
        return cls(amplitudes, variances)

    def describes(self, amplitudes, variances) -> bool:
        """Whether this view still describes a volume holding these arrays (the same
        objects, or traced arrays of the same shape and dtype)."""
        if isinstance(amplitudes, jax.core.Tracer) or isinstance(variances, jax.core.Tracer):
            return (amplitudes.shape == self.amplitudes.shape
                    and variances.shape == self.variances.shape
                    and amplitudes.dtype == self.amplitudes.dtype)
        return amplitudes is self.amplitudes and variances is self.variances

    def digest(self) -> bytes:
        if self._digest is None:
            a, v = np.asarray(self.amplitudes), np.asarray(self.variances)
            h = hashlib.sha256(repr((a.shape, a.dtype.str, v.shape, v.dtype.str)).encode())
            h.update(a.tobytes())
            h.update(v.tobytes())
            self._digest = h.digest()
        return self._digest

    def __hash__(self):
        return hash(self.digest())

    def __eq__(self, other):
        return isinstance(other, ConcreteMixture) and self.digest() == other.digest()

    def __getstate__(self):
        return {"amplitudes": np.asarray(self.amplitudes), "variances": np.asarray(self.variances)}

    def __setstate__(self, state):
        self.__init__(state["amplitudes"], state["variances"])

    def plan(self, voxel_size: float, truncation: float | None) -> SupportPlan:
        """The support plan of this mixture on voxels of `voxel_size` (A)."""
        variances = np.asarray(self.variances)
        truncation = default_truncation(variances.dtype) if truncation is None else truncation
        key = (float(voxel_size), float(truncation))
        if key not in self._plans:
            if len(self._plans) >= self._MAX_PLANS:
                self._plans.pop(next(iter(self._plans)))
            self._plans[key] = SupportPlan.from_mixture(
                np.asarray(self.amplitudes), variances, *key
            )
        return self._plans[key]
