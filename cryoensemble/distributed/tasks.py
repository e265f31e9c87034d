"""What Dask workers run: read a range of conformations, render it, write it.

Compiled renderers are cached per worker process, keyed by everything static (grid,
support, atom count, batch), so a worker compiles once per source and reuses it for every
batch; batches are padded to the planned size and atom counts to a few sizes.
"""

import dataclasses
import functools
import time

import numpy as np

from .. import store as store_module


@dataclasses.dataclass(frozen=True)
class RenderSpec:
    """Everything a task needs besides the source (picklable, hashable).

    - `shape`, `voxel_size` (A): the grid.
    - `support_radius` (A): each atom's cube of voxels (sized once on the client).
    - `batch_size`: conformations per task (tasks are padded to it).
    - `centre`: subtracted from every position (A), so the molecule sits in the box.
    - `extra_b_factor`: A^2 added to every atom's Peng b.
    - `store`: the zarr store path.
    """

    shape: tuple[int, int, int]
    voxel_size: float
    support_radius: float
    batch_size: int
    centre: tuple[float, float, float]
    extra_b_factor: float
    store: str


_COMPILES = {"count": 0}


def compile_count() -> int:
    """How many renderers this process has built (for the no-recompilation check)."""
    return _COMPILES["count"]


def mixture(source, extra_b_factor: float):
    """(amplitudes, variances), float32 (n_atoms, n_gaussians), of a source's atoms:
    its own mixture if it has one, else Peng (1996) with `extra_b_factor` added."""
    if hasattr(source, "mixture"):
        a, v = source.mixture()
        return np.asarray(a, np.float32), np.asarray(v, np.float32)
    return _peng_mixture(tuple(np.asarray(source.atomic_numbers).tolist()), float(extra_b_factor))


@functools.lru_cache(maxsize=16)
def _peng_mixture(atomic_numbers: tuple, extra_b_factor: float):
    from ..constants.scattering_factors import PengScatteringFactorParameters

    parameters = PengScatteringFactorParameters(np.asarray(atomic_numbers))  # names bad elements
    b = np.asarray(parameters.b, np.float64) + extra_b_factor
    return (np.asarray(parameters.a, np.float32), (b / (8 * np.pi**2)).astype(np.float32))


def padded_atom_count(n: int) -> int:
    """Round an atom count up to one of a few sizes (1, 1.25, 1.5, 1.75 x 2^k)."""
    if n <= 64:
        return 64
    power = 2 ** int(np.floor(np.log2(n)))
    for factor in (1.0, 1.25, 1.5, 1.75, 2.0):
        if n <= factor * power:
            return int(factor * power)
    return 2 * power


@functools.lru_cache(maxsize=32)
def batch_renderer(shape, voxel_size, support_radius, z_size=None):
    """A jitted `(positions (b, n, 3), amplitudes, variances, z_start) -> (b, z, y, x)`."""
    import jax

    from ..simulator import GaussianMixtureRenderFn, GaussianMixtureVolume

    _COMPILES["count"] += 1
    render = GaussianMixtureRenderFn(shape, voxel_size, support_radius=support_radius)
    z_size = shape[0] if z_size is None else z_size

    @jax.jit
    def run(positions, amplitudes, variances, z_start):
        def one(p):
            return render.render_slab(GaussianMixtureVolume(p, amplitudes, variances), z_start, z_size)

        return jax.lax.map(one, positions)

    return run


def _pad_batch(positions: np.ndarray, size: int) -> np.ndarray:
    if positions.shape[0] == size:
        return positions
    extra = np.repeat(positions[-1:], size - positions.shape[0], axis=0)
    return np.concatenate([positions, extra])


def _pad_atoms(positions, amplitudes, variances, n_padded):
    """Pad with zero-amplitude atoms (they add exact zeros)."""
    n = positions.shape[1]
    if n == n_padded:
        return positions, amplitudes, variances
    positions = np.concatenate(
        [positions, np.zeros((positions.shape[0], n_padded - n, 3), positions.dtype)], axis=1
    )
    amplitudes = np.concatenate([amplitudes, np.zeros((n_padded - n, amplitudes.shape[1]), amplitudes.dtype)])
    variances = np.concatenate([variances, np.ones((n_padded - n, variances.shape[1]), variances.dtype)])
    return positions, amplitudes, variances


def _read(source, spec: RenderSpec, start: int, stop: int) -> np.ndarray:
    positions = source.read(start, stop)
    return positions - np.asarray(spec.centre, np.float32)


def render_conformations(source, spec: RenderSpec, start: int, stop: int) -> dict:
    """Render conformations `[start, stop)` and write them, then mark them done."""
    t0 = time.perf_counter()
    positions = _pad_batch(_read(source, spec, start, stop), spec.batch_size)
    amplitudes, variances = mixture(source, spec.extra_b_factor)
    positions, amplitudes, variances = _pad_atoms(
        positions, amplitudes, variances, padded_atom_count(positions.shape[1])
    )
    t1 = time.perf_counter()
    run = batch_renderer(spec.shape, spec.voxel_size, spec.support_radius)
    volumes = run(positions, amplitudes, variances, 0)
    volumes.block_until_ready()
    t2 = time.perf_counter()
    host = np.asarray(volumes)[: stop - start]
    t3 = time.perf_counter()
    store_module.write_volumes(spec.store, start, host)
    store_module.mark_rendered(spec.store, start, stop)
    t4 = time.perf_counter()
    return {"start": start, "stop": stop, "read_s": t1 - t0, "render_s": t2 - t1,
            "to_host_s": t3 - t2, "write_s": t4 - t3}


def atoms_touching_slab(index_z: np.ndarray, z0: int, z1: int, radius_in_voxels: float) -> np.ndarray:
    """Mask of atoms whose support window meets z-planes [z0, z1) (same rule as the kernel)."""
    start = np.floor(index_z - radius_in_voxels + 0.5)
    k = int(np.ceil(2 * radius_in_voxels - 1e-9)) + 1
    return (start + k > z0) & (start < z1)


def render_slab(source, spec: RenderSpec, index: int, z0: int, z1: int) -> dict:
    """Render planes [z0, z1) of one conformation from the atoms that touch them; write."""
    t0 = time.perf_counter()
    positions = _read(source, spec, index, index + 1)
    amplitudes, variances = mixture(source, spec.extra_b_factor)
    index_z = positions[0, :, 2] / spec.voxel_size + spec.shape[0] // 2
    keep = atoms_touching_slab(index_z, z0, z1, spec.support_radius / spec.voxel_size)
    positions, amplitudes, variances = positions[:, keep], amplitudes[keep], variances[keep]
    positions, amplitudes, variances = _pad_atoms(
        positions, amplitudes, variances, padded_atom_count(max(int(keep.sum()), 1))
    )
    run = batch_renderer(spec.shape, spec.voxel_size, spec.support_radius, z1 - z0)
    slab = np.asarray(run(positions, amplitudes, variances, z0))
    t1 = time.perf_counter()
    store_module.write_volumes(spec.store, index, slab, z_start=z0)
    return {"index": index, "z0": z0, "atoms": int(keep.sum()), "seconds": time.perf_counter() - t0}


def render_atom_group(source, spec: RenderSpec, index: int, a0: int, a1: int) -> np.ndarray:
    """The partial volume of atoms [a0, a1) of one conformation (to be summed)."""
    positions = _read(source, spec, index, index + 1)[:, a0:a1]
    amplitudes, variances = mixture(source, spec.extra_b_factor)
    positions, amplitudes, variances = _pad_atoms(
        positions, amplitudes[a0:a1], variances[a0:a1], padded_atom_count(a1 - a0)
    )
    run = batch_renderer(spec.shape, spec.voxel_size, spec.support_radius)
    return np.asarray(run(positions, amplitudes, variances, 0))[0]


def add_volumes(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a + b


def write_conformation(spec: RenderSpec, index: int, volume: np.ndarray) -> dict:
    store_module.write_volumes(spec.store, index, volume[None])
    store_module.mark_rendered(spec.store, index, index + 1)
    return {"index": index}


def mark_done(spec: RenderSpec, index: int, *slab_results) -> dict:
    """Mark a slab-split conformation done once all its slabs are written."""
    store_module.mark_rendered(spec.store, index, index + 1)
    return {"index": index, "slabs": len(slab_results)}
