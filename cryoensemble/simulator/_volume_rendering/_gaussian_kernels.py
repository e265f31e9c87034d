"""Exact voxel averages of gaussian mixtures: the array kernels behind GaussianMixtureRenderFn.

Each voxel holds the average of the potential over its cube. For an isotropic gaussian
the average is separable: per axis, the mass of a 1D gaussian between the voxel's two
faces, `(erf(hi / (sqrt(2) s)) - erf(lo / (sqrt(2) s))) / 2`, so an atom's voxel values are
`sum_i a_i / dr^3 * px_i (x) py_i (x) pz_i` over its gaussians i.

Two evaluations share that formula:

- `render_local`: each atom is evaluated only on a cube of K^3 voxels around it (K from a
  truncation bound, `support_radii`), and the cubes are scatter-added into the grid.
  Cost scales with atoms x K^3, not atoms x grid. The cubes are computed inside the
  scatter (XLA fuses them), so they never occupy memory; on GPUs the scatter adds voxel
  by voxel into the unpadded grid, on CPUs row by row into a padded one (`scatter`).
- `render_dense`: every atom on every voxel, as rank-1 products summed by matrix
  multiplication, z-plane batch by z-plane batch. No truncation; used when the support
  cannot be sized (variances traced under `jit`) and as the cryojax-style reference.
"""

import functools
import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int


Shape3 = tuple[int, int, int]
# Elementwise erfc on float64 arrays (math.erfc is accurate in the far tail).
_erfc = np.frompyfunc(math.erfc, 1, 1)
_HIGHEST = jax.lax.Precision.HIGHEST


def _ARANGE(k):
    return jnp.arange(k, dtype=jnp.int32)


def support_radii(
    amplitudes: np.ndarray, variances: np.ndarray, voxel_size: float, truncation: float
) -> np.ndarray:
    """For each atom, the smallest half-width R (A) of the cube around it outside which
    its potential may be dropped; shape `(n_positions,)`.

    Bound: for every atom, the L2 norm of its voxel averages outside its window is at most
    `truncation` times the L2 norm of that atom's voxelized potential. The voxels outside
    the window lie wholly beyond R, and averaging cannot raise an L2 norm, so the dropped
    part is bounded by the continuous tail: per gaussian of standard deviation s, a
    fraction sqrt(1 - erf(R/s)^3) of its L2 norm. The atom's voxelized norm is estimated
    with each variance widened by the box blur dr^2/12. All amplitudes being of one sign,
    the relative L2 error of a whole volume is then about `truncation` too (tests measure it).

    **Arguments:**

    - `amplitudes`, `variances`: concrete arrays of shape `(n_positions, n_gaussians)`
      in A and A^2.
    - `voxel_size`: in A.
    - `truncation`: the relative bound, e.g. `1e-6`.
    """
    a = np.asarray(amplitudes, dtype=np.float64)
    v = np.asarray(variances, dtype=np.float64)
    if a.size == 0:
        return np.zeros(a.shape[0])
    # Atoms of one element share parameters: solve once per distinct row.
    rows, inverse = distinct_rows(np.concatenate([a, v], axis=1))
    a, v = rows[:, : a.shape[1]], rows[:, a.shape[1] :]
    if np.any(v <= 0) or not np.all(np.isfinite(v)):
        raise ValueError("GaussianMixtureRenderFn: variances must be finite and > 0")
    sigma = np.sqrt(v)
    blurred = v + voxel_size**2 / 12.0
    # L2 norm of each atom's (blurred) mixture: <g_i, g_j> = (2 pi (v_i + v_j))^(-3/2).
    gram = (2 * np.pi * (blurred[:, :, None] + blurred[:, None, :])) ** -1.5
    norm = np.sqrt(np.abs(np.einsum("ni,nij,nj->n", a, gram, a)))
    component_norm = np.abs(a) * (4 * np.pi * v) ** -0.75

    def tail(radius: np.ndarray) -> np.ndarray:
        e = _erfc(radius[:, None] / sigma).astype(np.float64)
        outside = 3 * e - 3 * e**2 + e**3  # 1 - erf^3 without cancellation
        return np.sum(component_norm * np.sqrt(np.clip(outside, 0, None)), axis=1)

    lo, hi = np.zeros(len(rows)), 40.0 * sigma.max(axis=1)
    for _ in range(60):  # bisection, all rows at once
        mid = 0.5 * (lo + hi)
        ok = tail(mid) <= truncation * norm
        hi, lo = np.where(ok, mid, hi), np.where(ok, lo, mid)
    return hi[inverse.reshape(-1)]


# Odd 64-bit multipliers: a row's hash is the wrapped sum of its bit patterns times these.
_ROW_HASH = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9,
                      0xD6E8FEB86659FD93, 0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53,
                      0x27D4EB2F165667C5, 0x94D049BB133111EB], dtype=np.uint64)


def distinct_rows(table: Float[np.ndarray, "n c"]) -> tuple[np.ndarray, Int[np.ndarray, " n"]]:
    """The distinct rows of a float64 table and each row's index into them, as
    `np.unique(table, axis=0, return_inverse=True)` gives (up to the rows' order).

    `np.unique(axis=0)` sorts the rows as opaque records, seconds for a million atoms;
    here each row is hashed to one integer (its bits times fixed odd multipliers, summed
    with wrap-around), the integers are made unique, and the result is checked exactly:
    on a collision, or NaNs, the record sort decides.
    """
    table = np.ascontiguousarray(table, dtype=np.float64)
    n, c = table.shape
    weights = np.resize(_ROW_HASH, c) + np.uint64(2) * np.arange(c, dtype=np.uint64)
    keys = np.zeros(n, np.uint64)
    bits = table.view(np.uint64)
    for j in range(c):  # column by column: no (n, c) temporaries
        keys += bits[:, j] * weights[j]
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    rows, inverse = table[first], inverse.reshape(-1)
    if not np.array_equal(rows[inverse], table):
        rows, inverse = np.unique(table, axis=0, return_inverse=True)
    return rows, inverse.reshape(-1)


# ((n_atoms, radius in A, window size k), ...) of contiguous groups of atoms.
SupportGroups = tuple[tuple[int, float, int], ...]


def support_groups(
    radii: np.ndarray, voxel_size: float, rows_of_atoms: np.ndarray | None = None
) -> tuple[np.ndarray, SupportGroups]:
    """Group atoms by window size, so that a few wide atoms (ions, high B) do not widen
    every atom's window.

    **Arguments:**

    - `radii`: each atom's support radius (A), or with `rows_of_atoms` each distinct
      row's (atoms of one element share one: millions of atoms, a few rows).
    - `voxel_size`: in A.
    - `rows_of_atoms`: each atom's index into `radii`, if `radii` is per row.

    **Returns:** `(order, groups)`: a stable permutation of the atoms that makes each group
    contiguous, and `((n_atoms, radius, k), ...)` per group in that order, radius the
    group's largest and k its window size in voxels.
    """
    radii = np.asarray(radii, np.float64)
    k_rows = window_size(radii, voxel_size)
    if rows_of_atoms is None:
        k, counts = k_rows, np.ones(len(radii), np.int64)
    else:
        k = k_rows[rows_of_atoms]
        counts = np.bincount(rows_of_atoms, minlength=len(radii))
    groups = tuple(
        (int(counts[k_rows == value].sum()), float(radii[k_rows == value].max()), int(value))
        for value in np.unique(k_rows)
        if counts[k_rows == value].sum()
    )
    return np.argsort(k, kind="stable"), groups


def window_size(radius, voxel_size: float):
    """Voxels per axis of the cube that covers every voxel meeting [p - R, p + R]: an int
    for one radius (A), an int64 array for an array of them."""
    k = np.ceil(2.0 * np.asarray(radius, np.float64) / voxel_size - 1e-9).astype(np.int64) + 1
    return int(k) if k.ndim == 0 else k


def voxel_offsets(positions: Float[Array, "n 3"], voxel_size) -> Float[Array, "n 3"]:
    """Positions (x, y, z) in A to (z, y, x) in voxels from the grid's centre voxel."""
    # Multiply by the reciprocal (XLA rewrites division so under jit), and keep the
    # product apart from the adds that follow (the barrier): fused, the compiler may
    # contract them into one FMA in one graph and not in another, and window starts
    # exactly on a plane would then differ between a render and its slab plan.
    return jax.lax.optimization_barrier(positions[:, ::-1] * (1.0 / voxel_size))


def window_starts(offsets: Float[Array, "n 3"], shape: Shape3, radius: float,
                  voxel_size) -> Int[Array, "n 3"]:
    """The first voxel (z, y, x), in absolute grid indices, of each atom's window of
    half-width `radius` (A), from its `voxel_offsets`. The one rule of which voxels an
    atom reaches: the kernels and `atoms_touching_planes` both call it."""
    index = offsets + jnp.asarray([s // 2 for s in shape], jnp.int32).astype(offsets.dtype)
    reach = jax.lax.optimization_barrier(radius * (1.0 / voxel_size))  # no FMA: see above
    return jnp.floor(index - reach + 0.5).astype(jnp.int32)


def touches_planes(start: Int[Array, "n 3"], k: int, shape: Shape3, z0, z1) -> Bool[Array, " n"]:
    """Whether each k-voxel window starting at `start` meets planes [z0, z1) of `shape`."""
    lower = jnp.stack([jnp.asarray(z0, jnp.int32), jnp.int32(0), jnp.int32(0)])
    upper = jnp.stack([jnp.asarray(z1, jnp.int32), jnp.int32(shape[1]), jnp.int32(shape[2])])
    return jnp.all((start + k > lower) & (start < upper), axis=1)


def _voxel_masses(edges: Float[Array, "n g k1"], sigma: Float[Array, "n g 1"]):
    """1D gaussian mass between consecutive voxel faces: shape (n, g, k)."""
    cdf = jax.lax.erf(edges / (jnp.sqrt(2.0).astype(edges.dtype) * sigma))
    return 0.5 * (cdf[..., 1:] - cdf[..., :-1])


def _profiles(offset, start, k, sigma, voxel_size):
    """Per-axis voxel masses on the window [start, start + k) of one axis, `offset` and
    `start` both counted from the grid's centre voxel.

    Both relative to the centre, not the corner: the faces are exact half-integers and
    their difference from `offset` is rounded relative to itself (small), where
    `offset + n // 2` would first lose the low bits of positions far from the corner
    (1e-5 voxel at 256 voxels in float32)."""
    faces = start[:, None, None] + jnp.arange(k + 1, dtype=offset.dtype) - 0.5
    return _voxel_masses((faces - offset[:, None, None]) * voxel_size, sigma)


# How blocks are accumulated into the grid (`GaussianMixtureRenderFn(scatter=...)`):
# - "voxels": one scatter update per voxel into the unpadded grid, voxels outside it
#   dropped (the faster one on GPUs).
# - "rows": k^2 rows of k voxels into a grid padded by k - 1 (the faster one on CPUs).
# - "windows": whole k^3 windows into the padded grid.
# - "auto": "voxels" on GPUs, "rows" elsewhere, chosen per compilation platform.
SCATTER_STRATEGIES = ("auto", "voxels", "rows", "windows")


def _window_blocks(
    weight: Float[Array, "n g"],
    pz: Float[Array, "n g k"],
    py: Float[Array, "n g k"],
    px: Float[Array, "n g k"],
) -> Float[Array, "n k k k"]:
    """Each atom's K^3 block `sum_i w_i pz_i (x) py_i (x) px_i`.

    The sum over gaussians is written out term by term rather than as a reduction: then
    every op is elementwise, so XLA fuses the whole block into the scatter that consumes
    it and the blocks never reach memory (1.7x faster on CPU, 7% on an H100 for 1.1M
    atoms). Plain broadcasting, not einsum: no TF32 matmul on GPUs (its 1e-3 error would
    swamp the truncation bound).
    """
    blocks = None
    for i in range(weight.shape[1]):
        term = (weight[:, i, None, None, None] * pz[:, i, :, None, None]
                * py[:, i, None, :, None] * px[:, i, None, None, :])
        blocks = term if blocks is None else blocks + term
    return blocks


def _scatter_blocks(grid, offset, blocks, k: int, scatter: str):
    """Add each atom's (k, k, k) block into `grid` at `offset` (its first voxel), as
    whole windows or as rows (`scatter`)."""
    if scatter == "windows":
        numbers = jax.lax.ScatterDimensionNumbers(
            update_window_dims=(1, 2, 3), inserted_window_dims=(), scatter_dims_to_operand_dims=(0, 1, 2)
        )
        return jax.lax.scatter_add(grid, offset, blocks, numbers)
    rows_shape = (offset.shape[0], k, k)
    rows = jnp.stack(
        [
            jnp.broadcast_to(offset[:, None, None, 0] + _ARANGE(k)[:, None], rows_shape),
            jnp.broadcast_to(offset[:, None, None, 1] + _ARANGE(k)[None, :], rows_shape),
            jnp.broadcast_to(offset[:, None, None, 2], rows_shape),
        ],
        axis=-1,
    ).reshape(-1, 3)
    numbers = jax.lax.ScatterDimensionNumbers(
        update_window_dims=(1,), inserted_window_dims=(0, 1), scatter_dims_to_operand_dims=(0, 1, 2)
    )
    return jax.lax.scatter_add(grid, rows, blocks.reshape(-1, k), numbers)


def _scatter_voxels(grid, start, blocks):
    """Add each atom's (k, k, k) block, its first voxel at `start` (relative to the grid),
    into `grid` voxel by voxel; voxels outside the grid are dropped."""
    n, k = blocks.shape[0], blocks.shape[-1]
    ramp = _ARANGE(k)
    voxels = [
        jnp.broadcast_to(start[:, 0, None, None, None] + ramp[:, None, None], blocks.shape),
        jnp.broadcast_to(start[:, 1, None, None, None] + ramp[None, :, None], blocks.shape),
        jnp.broadcast_to(start[:, 2, None, None, None] + ramp[None, None, :], blocks.shape),
    ]
    numbers = jax.lax.ScatterDimensionNumbers(
        update_window_dims=(), inserted_window_dims=(0, 1, 2), scatter_dims_to_operand_dims=(0, 1, 2)
    )
    return jax.lax.scatter_add(
        grid, jnp.stack(voxels, axis=-1).reshape(n * k**3, 3), blocks.reshape(-1), numbers,
        mode=jax.lax.GatherScatterMode.FILL_OR_DROP,
    )


def _compiled_whole(*static: str):
    """Run the kernel compiled whole, its voxel size a compile-time constant, unless the
    voxel size is traced (then inline, as it is written): an eager call (a notebook's
    `render(volume)`) then compiles once instead of op by op, each op compiled on its own,
    and under a caller's jit the kernel is traced inline either way. The voxel size stays
    a constant, as in a caller's jit over a render function: traced, 1 / voxel size is
    rounded in float32, and the window of an atom exactly on a boundary may start one
    voxel off (either window covers the atom's support; only bitwise equality with a
    slab render is lost)."""

    def decorate(function):
        compiled = jax.jit(function, static_argnames=static + ("voxel_size",))
        signature = inspect.signature(function)

        @functools.wraps(function)
        def call(*args, **kwargs):
            arguments = signature.bind(*args, **kwargs).arguments
            if isinstance(arguments["voxel_size"], jax.core.Tracer):
                return function(*args, **kwargs)
            arguments["voxel_size"] = float(arguments["voxel_size"])
            return compiled(**arguments)

        return call

    return decorate


@_compiled_whole("shape", "groups", "z_size", "n_batches", "scatter")
def render_local(
    positions: Float[Array, "n 3"],
    amplitudes: Float[Array, "n g"],
    variances: Float[Array, "n g"],
    shape: Shape3,
    voxel_size,
    groups: SupportGroups,
    z_start=0,
    z_size: int | None = None,
    n_batches: int = 1,
    scatter: str = "auto",
) -> Float[Array, "z_size ny nx"]:
    """Voxel averages of a gaussian mixture, each atom on a K^3 window around it.

    Renders z-planes `[z_start, z_start + z_size)` of the grid `shape` (all by default);
    `z_start` may be traced. Each voxel receives the same addends, in atom order, whichever
    z range is rendered, so slabs of a volume equal the whole volume bit for bit on CPU.

    **Arguments:**

    - `positions`, `amplitudes`, `variances`: the mixture, in A, A and A^2.
    - `shape`: the grid (nz, ny, nx); `voxel_size` in A.
    - `groups`: `((n_atoms, radius, k), ...)`: the atoms, in order, fall into contiguous
      groups whose k^3 windows cover `radius` (A) around each atom (see `support_groups`).
    - `n_batches`: each group's atoms are processed in this many parts, summed in
      sequence, which bounds the memory of the per-atom intermediates.
    - `scatter`: how windows are added into the grid (`SCATTER_STRATEGIES`).
    """
    nz, ny, nx = shape
    z_size = nz if z_size is None else z_size
    voxel_size = jnp.asarray(voxel_size, positions.dtype)
    if sum(group[0] for group in groups) != positions.shape[0]:
        raise ValueError(
            f"render_local: support groups cover {sum(g[0] for g in groups)} atoms, "
            f"the volume has {positions.shape[0]}"
        )
    offsets = voxel_offsets(positions, voxel_size)
    z_start = jnp.asarray(z_start, jnp.int32)
    accumulate = functools.partial(
        _accumulate, shape=(z_size, ny, nx), grid_shape=tuple(shape), groups=groups,
        n_batches=n_batches,
    )
    if scatter not in SCATTER_STRATEGIES:
        raise ValueError(f"render_local: scatter must be one of {SCATTER_STRATEGIES}; got {scatter!r}")
    if scatter != "auto":
        return accumulate(offsets, amplitudes, variances, voxel_size, z_start, scatter=scatter)
    voxels = functools.partial(accumulate, scatter="voxels")
    return jax.lax.platform_dependent(
        offsets, amplitudes, variances, voxel_size, z_start,
        cuda=voxels, rocm=voxels, default=functools.partial(accumulate, scatter="rows"),
    )


def _accumulate(offsets, amplitudes, variances, voxel_size, z_start, *, shape, grid_shape,
                groups, n_batches, scatter):
    """`render_local` on voxel `offsets` (from the centre of the grid `grid_shape`), into
    the slab `shape` starting at absolute plane `z_start`, with the `scatter` strategy."""
    z_size, ny, nx = shape
    centre_voxel = jnp.asarray([s // 2 for s in grid_shape], jnp.int32)
    k_max = max([k for _, _, k in groups] + [1])
    pad = 0 if scatter == "voxels" else k_max - 1
    padded_shape = (z_size + 2 * pad, ny + 2 * pad, nx + 2 * pad)
    lower = jnp.stack([z_start, jnp.int32(0), jnp.int32(0)])

    def add_group(grid, offsets, amplitudes, variances, radius, k):
        n = offsets.shape[0]
        parts = min(n_batches, n)
        per_batch = -(-n // parts)
        n_padded = per_batch * parts

        def pad_atoms(x, value):
            return jnp.concatenate([x, jnp.full((n_padded - n,) + x.shape[1:], value, x.dtype)])

        batches = (
            pad_atoms(offsets, 0.0).reshape(parts, per_batch, 3),
            pad_atoms(amplitudes, 0.0).reshape(parts, per_batch, -1),
            pad_atoms(variances, 1.0).reshape(parts, per_batch, -1),
        )

        def add_batch(grid, batch):
            offset, amplitude, variance = batch
            start = window_starts(offset, grid_shape, radius, voxel_size)
            sigma = jnp.sqrt(variance)[..., None]
            pz, py, px = (
                _profiles(offset[:, j], start[:, j] - centre_voxel[j], k, sigma, voxel_size)
                for j in range(3)
            )
            touches = touches_planes(start, k, grid_shape, z_start, z_start + z_size)
            weight = jnp.where(touches[:, None], amplitude, 0.0) * (1.0 / voxel_size) ** 3
            blocks = _window_blocks(weight, pz, py, px)
            if scatter == "voxels":
                return _scatter_voxels(grid, start - lower, blocks), None
            # Windows that touch the range fit the padded grid unclipped; the others are
            # zero and are clipped anywhere in range.
            corner = jnp.clip(start - lower + pad, 0, jnp.asarray(padded_shape) - k)
            return _scatter_blocks(grid, corner, blocks, k, scatter), None

        if parts == 1:
            return add_batch(grid, jax.tree.map(lambda x: x[0], batches))[0]
        return jax.lax.scan(add_batch, grid, batches)[0]

    grid = jnp.zeros(padded_shape, offsets.dtype)
    first = 0
    for count, radius, k in groups:
        if count:
            part = slice(first, first + count)
            grid = add_group(grid, offsets[part], amplitudes[part], variances[part], radius, k)
        first += count
    return grid[pad : pad + z_size, pad : pad + ny, pad : pad + nx]


@_compiled_whole("shape", "batch_size", "n_batches")
def render_dense(
    positions: Float[Array, "n 3"],
    amplitudes: Float[Array, "n g"],
    variances: Float[Array, "n g"],
    shape: Shape3,
    voxel_size,
    batch_size: int = 1,
    n_batches: int = 1,
) -> Float[Array, "nz ny nx"]:
    """Voxel averages of a gaussian mixture, every atom on every voxel (no truncation).

    The volume is `V[z, y, x] = sum_(n, i) w_ni pz_ni[z] py_ni[y] px_ni[x]`, evaluated
    `batch_size` z-planes at a time as matrix products, over `n_batches` groups of atoms.
    """
    nz, ny, nx = shape
    dtype = positions.dtype
    voxel_size = jnp.asarray(voxel_size, dtype)
    offsets = voxel_offsets(positions, voxel_size)
    sigma = jnp.sqrt(variances)[..., None]
    first = jnp.zeros(positions.shape[0], jnp.int32)
    pz, py, px = (
        _profiles(offsets[:, j], first - n_axis // 2, n_axis, sigma, voxel_size)
        for j, n_axis in enumerate(shape)
    )
    weight = amplitudes / voxel_size**3
    g = amplitudes.shape[1]
    n = positions.shape[0]
    per_batch = -(-n // n_batches)
    n_padded = per_batch * n_batches

    def group(x):  # (n, g, m) -> (n_batches, per_batch * g, m)
        x = jnp.concatenate([x, jnp.zeros((n_padded - n,) + x.shape[1:], x.dtype)])
        return x.reshape(n_batches, per_batch * g, x.shape[-1])

    pz, py, px = group(pz * weight[..., None]), group(py), group(px)
    n_steps = -(-nz // batch_size)
    pz = jnp.concatenate(
        [pz, jnp.zeros(pz.shape[:2] + (n_steps * batch_size - nz,), dtype)], axis=-1
    )
    pz_steps = jnp.moveaxis(pz.reshape(n_batches, -1, n_steps, batch_size), 2, 0)

    def planes(pz_step):  # (n_batches, rows, batch_size) -> (batch_size, ny, nx)
        def add_group(acc, parts):
            pz_b, py_b, px_b = parts
            yx = (py_b[:, :, None] * px_b[:, None, :]).reshape(py_b.shape[0], -1)
            step = jnp.matmul(pz_b.T, yx, precision=_HIGHEST)
            return acc + step.reshape(batch_size, ny, nx), None

        acc = jnp.zeros((batch_size, ny, nx), dtype)
        acc, _ = jax.lax.scan(add_group, acc, (pz_step, py, px))
        return acc

    volume = jax.lax.map(planes, pz_steps)
    return volume.reshape(n_steps * batch_size, ny, nx)[:nz]
