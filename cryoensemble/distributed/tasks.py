"""What Dask workers run: read a range of conformations, render it, write it.

Compiled renderers are cached per worker process (`WorkerState`), keyed by everything
static (grid, support, atom count, batch), so a worker compiles once per source and reuses
it for every batch; batches are padded to the planned size and atom counts to a few sizes.
"""

import collections
import dataclasses
import json
import os
import time
import types

from typing import TYPE_CHECKING

import numpy as np

from .. import store as store_module
from . import config


if TYPE_CHECKING:
    from ..simulator import SupportPlan


@dataclasses.dataclass(frozen=True)
class Renderer:
    """One way of rendering a stored volume, as the store records it."""

    name: str
    description: str
    splits_atoms: bool  # renders any subset of atoms (z-slabs, atom groups)
    needs_tabulated_atoms: bool  # Peng factors per element, no source mixtures
    periodic: bool = False  # atoms outside the box wrap around (a Fourier series)

    def store_parameters(self, truncation: float) -> dict:
        if self.name == "gaussian":
            return {"name": "gaussian", "truncation": truncation}
        return {"name": "fft", "eps": 1e-6, "sampling_mode": "average"}


# The renderers `render_ensemble` offers, by name (the one place the names are spelled).
RENDERERS = types.MappingProxyType({
    "gaussian": Renderer("gaussian", "GaussianMixtureRenderFn (exact voxel averages)",
                         splits_atoms=True, needs_tabulated_atoms=False),
    "fft": Renderer("fft", "FFTAtomRenderFn (band-limited voxel averages, Peng)",
                    splits_atoms=False, needs_tabulated_atoms=True, periodic=True),
})


@dataclasses.dataclass(frozen=True)
class RenderSpec:
    """Everything a task needs besides the source (picklable, hashable).

    - `shape`, `voxel_size` (A): the grid.
    - `truncation`: the relative L2 bound that sizes each atom's cube of voxels (the plan
      is derived from it identically on the client and on every worker).
    - `batch_size`: conformations per task (tasks are padded to it).
    - `centre`: subtracted from every position (A), so the molecule sits in the box.
    - `extra_b_factor`: A^2 added to every atom's Peng b.
    - `store`: the store (a `cryoensemble.store.StoreLocation`, opaque here).
    - `renderer`: a key of `RENDERERS`.
    - `generation`: the store's incarnation (`store.store_generation`), set once the
      store is prepared; workers reuse their writer of the same generation.
    """

    shape: tuple[int, int, int]
    voxel_size: float
    truncation: float
    batch_size: int
    centre: tuple[float, float, float]
    extra_b_factor: float
    store: "store_module.StoreLocation"
    renderer: str = "gaussian"
    generation: str = ""


class _Bounded(collections.OrderedDict):
    """A least-recently-used cache of at most `size` entries."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def get_or_make(self, key, make):
        if key in self:
            self.move_to_end(key)
            return self[key]
        value = make()
        self[key] = value
        while len(self) > self.size:
            self.popitem(last=False)
        return value


class WorkerState:
    """Everything a worker process keeps between tasks, each cache bounded.

    - `mixtures`: per source, its distinct mixtures and each atom's row (a few sources).
    - `plans`: per source and grid, the atoms' `AtomPlan` (a 10.8M-atom plan is ~400 MB:
      two kept).
    - `positions`: the last conformation read in plan order (its slabs follow one another).
    - `renderers`: compiled renderers by static key.
    - `pinned_unavailable`: platforms without pinned host memory; `compiles`: renderers
      built so far.
    - `writers`: open store writers by (store, generation).
    - `encoders`: device chunk encoders by (store, device); `device_codec`: whether
      nvCOMP runs here (None until asked); `batch_limits`: the most conformations per
      batch by (grid, renderer), from device memory and lowered after an out-of-memory.
    """

    def __init__(self):
        self.mixtures = _Bounded(8)
        self.plans = _Bounded(2)
        self.positions = _Bounded(1)
        self.renderers = _Bounded(32)
        self.pinned_unavailable: set[str] = set()
        self.compiles = 0
        self.writers = _Bounded(4)
        self.encoders = _Bounded(4)
        self.device_codec: bool | None = None
        self.batch_limits: dict[tuple, int] = {}


_STATE = WorkerState()


def worker_state() -> WorkerState:
    """This process's `WorkerState` (the only state tasks keep)."""
    return _STATE


def compile_count() -> int:
    """How many renderers this process has built (for the no-recompilation check)."""
    return _STATE.compiles


def store_writer(spec: RenderSpec):
    """This worker's `StoreWriter` for the spec's store, opened once per store generation
    (opening reads three metadata documents: a round trip each on object storage); a
    spec without a generation gets a fresh writer."""
    if not spec.generation:
        return store_module.open_writer(spec.store)
    return _STATE.writers.get_or_make(
        (spec.store, spec.generation), lambda: store_module.open_writer(spec.store))


def _source_key(source) -> str:
    """What identifies a source's atoms: its description (files, selections, seeds)."""
    return json.dumps(source.description(), sort_keys=True, default=str)


def _mixture_rows(source, extra_b_factor: float):
    """(amplitudes, variances, inverse): the distinct mixtures of a source's atoms and
    each atom's index into them (Peng (1996) per element with `extra_b_factor` added), or
    per-atom arrays and `inverse` None for a source with its own mixture."""
    own = source.mixture()
    if own is not None:
        a, v = own
        return np.asarray(a, np.float32), np.asarray(v, np.float32), None

    def make():
        # NumPy only: the client plans too, and must not start a JAX backend.
        from ..constants import b_factor_to_variance_numpy, peng_parameters_numpy

        elements, inverse = np.unique(source.atomic_numbers, return_inverse=True)
        a, b = peng_parameters_numpy(elements)  # names bad elements
        return (np.asarray(a, np.float32),
                np.asarray(b_factor_to_variance_numpy(b + float(extra_b_factor)), np.float32),
                inverse.reshape(-1))

    return _STATE.mixtures.get_or_make((_source_key(source), float(extra_b_factor)), make)


def mixture(source, extra_b_factor: float):
    """(amplitudes, variances), float32 (n_atoms, n_gaussians), of a source's atoms:
    its own mixture if it has one, else Peng (1996) with `extra_b_factor` added."""
    a, v, inverse = _mixture_rows(source, extra_b_factor)
    return (a, v) if inverse is None else (a[inverse], v[inverse])


@dataclasses.dataclass(frozen=True)
class AtomPlan:
    """A source's atoms in support-plan order: `support.order` permutes the source's
    atoms, `amplitudes`/`variances` are already permuted, `support.groups` is
    `((n, radius, k), ...)` over the permuted atoms."""

    support: "SupportPlan"
    amplitudes: np.ndarray
    variances: np.ndarray

    @property
    def order(self) -> np.ndarray:
        n = self.amplitudes.shape[0]
        return np.arange(n) if self.support.order is None else self.support.order

    @property
    def groups(self) -> tuple:
        return self.support.groups

    @property
    def sorted_support(self) -> "SupportPlan":
        """The plan of the atoms once permuted (no order)."""
        from ..simulator import SupportPlan

        return SupportPlan(None, self.support.groups)


def support_plan(source, spec: RenderSpec) -> AtomPlan:
    """The (cached) support plan of a source's atoms for this grid and bound."""
    from ..simulator import SupportPlan

    def make():
        a, v, inverse = _mixture_rows(source, spec.extra_b_factor)
        # Per element where the source has no mixture of its own: 10.8M atoms in
        # seconds, not a minute.
        plan = SupportPlan.from_mixture(a, v, spec.voxel_size, spec.truncation,
                                        rows_of_atoms=inverse)
        if inverse is not None:
            a, v = a[inverse], v[inverse]
        if plan.order is not None:
            a, v = a[plan.order], v[plan.order]
        return AtomPlan(plan, a, v)

    key = (_source_key(source), spec.extra_b_factor, spec.voxel_size, spec.truncation)
    return _STATE.plans.get_or_make(key, make)


def _pad_groups(groups: tuple, counts: list[int]) -> tuple[tuple, list[int]]:
    """Groups with each count rounded up to a few sizes (bounded recompilation), and the
    padding each needs."""
    padded = tuple((padded_atom_count(n), r, k) for (_, r, k), n in zip(groups, counts) if n)
    extra = [padded_atom_count(n) - n for n in counts if n]
    return padded, extra


def _select(positions, plan: AtomPlan, mask: np.ndarray):
    """Keep, group by group, the atoms in `mask` (over the plan-ordered atoms); pad each
    group with zero-amplitude atoms (they add exact zeros). Returns positions,
    amplitudes, variances and the groups."""
    pieces_p, pieces_a, pieces_v, counts = [], [], [], []
    first = 0
    for count, _, _ in plan.groups:
        part = slice(first, first + count)
        first += count
        keep = mask[part]
        n = int(keep.sum())
        counts.append(n)
        if not n:
            continue
        extra = padded_atom_count(n) - n
        p = positions[:, part][:, keep]
        pieces_p.append(np.concatenate([p, np.zeros((p.shape[0], extra, 3), p.dtype)], axis=1))
        a, v = plan.amplitudes[part][keep], plan.variances[part][keep]
        pieces_a.append(np.concatenate([a, np.zeros((extra, a.shape[1]), a.dtype)]))
        pieces_v.append(np.concatenate([v, np.ones((extra, v.shape[1]), v.dtype)]))
    groups, _ = _pad_groups(plan.groups, counts)
    return (np.concatenate(pieces_p, axis=1), np.concatenate(pieces_a),
            np.concatenate(pieces_v), groups)


def padded_atom_count(n: int) -> int:
    """Round an atom count up to one of a few sizes (1, 1.25, 1.5, 1.75 x 2^k)."""
    if n <= 64:
        return 64
    power = 2 ** int(np.floor(np.log2(n)))
    for factor in (1.0, 1.25, 1.5, 1.75, 2.0):
        if n <= factor * power:
            return int(factor * power)
    return 2 * power


# Window voxels (k^3 per atom) evaluated per pass over a group's atoms: bounds the device
# memory of a huge slab's blocks and scatter indices (~1 GiB at 2^26) whatever its atoms.
_ADDENDS_PER_PASS = 2**26


def atom_passes(groups) -> int:
    """Passes over each support group's atoms (`GaussianMixtureRenderFn`'s `n_batches`) so
    that at most `_ADDENDS_PER_PASS` window voxels are in flight; 1 for proteins. The
    passes add the atoms in the same order, so results are unchanged (bit for bit on CPU)."""
    return max([1] + [-(-n * k**3 // _ADDENDS_PER_PASS) for n, _, k in groups])


def batch_renderer(shape, voxel_size, groups, z_size=None, scatter="auto"):
    """A jitted `(positions (b, n, 3), amplitudes, variances, z_start) -> (b, z, y, x)`
    for atoms sorted into `groups` (see `AtomPlan`), cached in the `WorkerState`."""

    def make():
        import jax

        from ..simulator import GaussianMixtureRenderFn, GaussianMixtureVolume, SupportPlan

        _STATE.compiles += 1
        render = GaussianMixtureRenderFn(
            shape, voxel_size, support_plan=SupportPlan(None, groups), scatter=scatter,
            batch_options={"n_batches": atom_passes(groups)},
        )
        planes = shape[0] if z_size is None else z_size

        @jax.jit
        def run(positions, amplitudes, variances, z_start):
            def one(p):
                volume = GaussianMixtureVolume(p, amplitudes, variances)
                return render.render_slab(volume, z_start, planes)

            return jax.lax.map(one, positions)

        return run

    key = ("gaussian", shape, voxel_size, groups, z_size, scatter)
    return _STATE.renderers.get_or_make(key, make)


def _pad_batch(positions: np.ndarray, size: int) -> np.ndarray:
    if positions.shape[0] == size:
        return positions
    extra = np.repeat(positions[-1:], size - positions.shape[0], axis=0)
    return np.concatenate([positions, extra])


def _read(source, spec: RenderSpec, start: int, stop: int) -> np.ndarray:
    positions = source.read(start, stop)
    return positions - np.asarray(spec.centre, np.float32)


def fft_batch_renderer(shape, voxel_size, elements: tuple, counts: tuple, extra_b_factor):
    """A jitted `(positions (b, n, 3) sorted by element) -> (b, z, y, x)` through
    `FFTAtomRenderFn`, one NUFFT per element with its Peng factor."""

    def make():
        import jax

        from ..constants import PengScatteringFactorParameters
        from ..simulator import FFTAtomRenderFn, IndependentAtomVolume

        _STATE.compiles += 1
        # The JAX-native NUFFT: no OpenMP runtime inside forked Dask worker processes.
        render = FFTAtomRenderFn(shape, voxel_size, backend="jax")
        parameters = PengScatteringFactorParameters(np.asarray(elements))
        bounds = np.cumsum((0,) + counts)

        @jax.jit
        def run(positions):
            def one(p):
                by_element = tuple(p[a:b] for a, b in zip(bounds[:-1], bounds[1:]))
                volume = IndependentAtomVolume.from_tabulated_parameters(
                    by_element, parameters, b_factor_by_element=extra_b_factor
                )
                return render(volume)

            return jax.lax.map(one, positions)

        return run

    key = ("fft", shape, voxel_size, elements, counts, extra_b_factor)
    return _STATE.renderers.get_or_make(key, make)


def _render_batch(source, spec: RenderSpec, positions: np.ndarray):
    """Device volumes of a batch of conformations with the spec's renderer."""
    if spec.renderer == "fft":
        order = np.argsort(source.atomic_numbers, kind="stable")
        elements, counts = np.unique(source.atomic_numbers, return_counts=True)
        run = fft_batch_renderer(spec.shape, spec.voxel_size, tuple(elements.tolist()),
                                 tuple(counts.tolist()), spec.extra_b_factor)
        return run(positions[:, order])
    plan = support_plan(source, spec)
    everything = np.ones(plan.amplitudes.shape[0], bool)
    positions, amplitudes, variances, groups = _select(positions[:, plan.order], plan, everything)
    run = batch_renderer(spec.shape, spec.voxel_size, groups)
    return run(positions, amplitudes, variances, 0)


def render_conformations(source, spec: RenderSpec, start: int, stop: int) -> dict:
    """Render conformations `[start, stop)`, write them, then mark them done.

    On a GPU worker with nvCOMP (`cryoensemble.device-compression: auto`) each batch is
    cut into the store's chunks and zstd-compressed on the device, and only the
    compressed objects reach the host, which stores them as they are
    (`StoreWriter.write_objects`); elsewhere the batch reaches the host in pieces
    (`host_pieces`), each written through zarr's codec pipeline. The range runs in
    batches that fit the worker's device memory (`fitting_batch`); a batch that runs out
    of device memory is retried in halves, and the smaller size is kept for later tasks.

    Returns the range, the bytes rendered, the bytes copied to the host (`to_host_bytes`)
    and written (`written_bytes`), where the task's time went (s: `read`, `render` until
    the device is done, `encode` on the device, `to_host`, `write` (host encoding, when
    zarr's codec runs, and storing), `mark`) and the process's host-core time per stage
    (`cpu_user_s`/`cpu_system_s`: {stage: s}).
    """
    profile = _Profile()
    fits = fitting_batch(spec)
    # Equal batches of the planned size's parts (the same few sizes on every task: one
    # compile each), not a full batch and a padded remainder.
    size = spec.batch_size
    if fits < size:
        size = -(-size // -(-size // fits))
    a = start
    while a < stop:
        b = min(stop, a + size)
        try:
            _render_and_write(source, spec, a, b, size, profile)
        except Exception as error:  # noqa: BLE001 - only device OOM is retried
            if size == 1 or not is_device_out_of_memory(error):
                raise
            size = max(1, size // 2)
            _STATE.batch_limits[_batch_key(spec)] = size
            profile.retries += 1
            continue
        a = b
    with profile.stage("mark"):
        store_writer(spec).mark_rendered(start, stop)
    volume_bytes = int(np.prod(spec.shape)) * 4
    return {"start": start, "stop": stop, "bytes": volume_bytes * (stop - start),
            "batch": size, "retries": profile.retries, "peak_device_mib": _peak_device_mib(),
            **profile.result()}


class _Profile:
    """Wall time and this process's user/system CPU time per task stage."""

    STAGES = ("read", "render", "encode", "to_host", "write", "mark")

    def __init__(self):
        self.wall = dict.fromkeys(self.STAGES, 0.0)
        self.user = dict.fromkeys(self.STAGES, 0.0)
        self.system = dict.fromkeys(self.STAGES, 0.0)
        self.to_host_bytes = 0
        self.written_bytes = 0
        self.retries = 0

    def stage(self, name: str):
        import contextlib
        import resource

        @contextlib.contextmanager
        def timed():
            usage, t = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            try:
                yield
            finally:
                after = resource.getrusage(resource.RUSAGE_SELF)
                self.wall[name] += time.perf_counter() - t
                self.user[name] += after.ru_utime - usage.ru_utime
                self.system[name] += after.ru_stime - usage.ru_stime

        return timed()

    def result(self) -> dict:
        return {**{f"{k}_s": v for k, v in self.wall.items()},
                "cpu_user_s": dict(self.user), "cpu_system_s": dict(self.system),
                "to_host_bytes": self.to_host_bytes, "written_bytes": self.written_bytes}


def _render_and_write(source, spec: RenderSpec, a: int, b: int, size: int, profile) -> None:
    """Render conformations [a, b) as one batch padded to `size`, write their shards."""
    with profile.stage("read"):
        positions = _pad_batch(_read(source, spec, a, b), size)
    with profile.stage("render"):
        volumes = _render_batch(source, spec, positions)
        volumes.block_until_ready()
    writer = store_writer(spec)
    encoder = _device_encoder(spec, writer, volumes)
    if encoder is not None:
        with profile.stage("encode"):
            blocks, keep = encoder.chunks(volumes[: b - a] if b - a < size else volumes)
            frames = encoder.compress(blocks, keep)
        with profile.stage("to_host"):
            payload = encoder.fetch(frames)
            profile.to_host_bytes += sum(len(p) for p in payload)
        del blocks, frames
        with profile.stage("write"):
            profile.written_bytes += writer.write_objects(encoder.assemble(payload, keep, a))
        return
    copies = host_pieces(volumes, b - a)
    while True:
        with profile.stage("to_host"):
            piece = next(copies, None)
        if piece is None:
            break
        offset, host = piece
        profile.to_host_bytes += host.nbytes
        with profile.stage("write"):
            writer.write_volumes(a + offset, host)
        profile.written_bytes += host.nbytes  # raw; zarr compresses it


def _device_encoder(spec: RenderSpec, writer, volumes):
    """This worker's `ZarrChunkEncoder` (nvCOMP) for the store's `potential`, when the
    batch is on a CUDA device, nvCOMP is installed and `cryoensemble.device-compression`
    allows it; None means zarr's own CPU codec."""
    device = next(iter(volumes.devices()))
    if device.platform != "gpu" or not encodes_on_device():
        return None
    from ._device_codec import ZarrChunkEncoder

    def make():
        return ZarrChunkEncoder(writer.potential_array, compressor="nvcomp")

    if not spec.generation:
        return make()
    return _STATE.encoders.get_or_make((spec.store, spec.generation, device.id), make)


# Device memory a batch needs per volume, in volumes' bytes: the batch, its chunk
# rearrangement and the renderer's temporaries, and where batches are compressed on the
# device, nvCOMP's output and scratch buffers (taken from the same JAX pool).
_DEVICE_BYTES_PER_VOLUME = 6
# nvCOMP's zstd scratch is large: a worker peaked at 11.2 GiB for 256 volumes of 96^3
# (0.84 GiB) with its renderer (benchmarks/ensemble.py).
_CODEC_BYTES_PER_VOLUME = 8
# Device memory a batch needs whatever its size (renderer passes, XLA workspace): a
# 2.5 GiB pool ran out at 256^3 with 5 volumes under a 1 GiB allowance.
_DEVICE_BYTES_FIXED = 2 * 2**30


def fitting_batch(spec: RenderSpec) -> int:
    """The most conformations per batch this worker's device memory holds (the task's
    batch size on the host), lowered for good after a batch ran out of memory."""
    import jax

    key = _batch_key(spec)
    if key in _STATE.batch_limits:
        return _STATE.batch_limits[key]
    device = jax.devices()[0]
    limit = None
    if device.platform != "cpu":
        limit = (device.memory_stats() or {}).get("bytes_limit")
    if not limit:
        return spec.batch_size
    volume_bytes = int(np.prod(spec.shape)) * 4
    per_volume = _DEVICE_BYTES_PER_VOLUME + (_CODEC_BYTES_PER_VOLUME if encodes_on_device() else 0)
    fixed = min(_DEVICE_BYTES_FIXED, int(limit) // 4)
    fits = max(1, (int(limit) - fixed) // (per_volume * volume_bytes))
    _STATE.batch_limits[key] = int(fits)
    return int(fits)


def encodes_on_device() -> bool:
    """Whether this worker's batches are compressed on its device (a CUDA device, nvCOMP
    and `cryoensemble.device-compression: auto`): then the host never holds a raw batch,
    and batch sizes are bounded by device memory alone."""
    import jax

    if config.get("device-compression") != "auto" or jax.devices()[0].platform != "gpu":
        return False
    if _STATE.device_codec is None:
        from ._device_codec import device_codec_available

        _STATE.device_codec = device_codec_available()
    return _STATE.device_codec


def _batch_key(spec: RenderSpec) -> tuple:
    return (spec.shape, spec.renderer)


_OUT_OF_MEMORY = ("RESOURCE_EXHAUSTED", "out of memory", "cudaErrorMemoryAllocation",
                  "CUDA_ERROR_OUT_OF_MEMORY", "OUT_OF_MEMORY")


def is_device_out_of_memory(error: BaseException) -> bool:
    """Whether `error` is a device allocation failure (XLA's RESOURCE_EXHAUSTED, CUDA's or
    nvCOMP's out-of-memory), which a smaller batch avoids."""
    if isinstance(error, MemoryError):
        return False  # the host's memory: a smaller device batch does not help
    text = f"{type(error).__name__}: {error}"
    return any(marker.lower() in text.lower() for marker in _OUT_OF_MEMORY)


# Bytes per piece of a batch copied to the host: small enough that compression starts
# early, large enough that each copy runs at full PCIe speed.
_PIECE_BYTES = 32 * 2**20


def host_pieces(volumes, n: int):
    """Yield `(offset, numpy array)` pieces of the first `n` volumes of a device batch,
    in order. On a GPU every piece's copy is started before the first is waited for,
    into page-locked host memory (`memory_kind="pinned_host"`): the DMA engine runs the
    copies back to back at PCIe speed without the CPU, while the caller compresses the
    pieces already there (a plain `np.asarray` of a batch ran at 0.2-1.3 GB/s, through
    pageable staging buffers). `cryoensemble.device-to-host: async` in dask config uses
    `copy_to_host_async` instead.
    """
    import jax

    device = next(iter(volumes.devices()))
    if device.platform == "cpu":
        yield 0, np.asarray(volumes[:n] if n < volumes.shape[0] else volumes)
        return
    per_piece = max(1, _PIECE_BYTES // (volumes.nbytes // volumes.shape[0]))
    offsets = range(0, n, per_piece)
    pieces = [volumes[a : min(n, a + per_piece)] for a in offsets]
    pinned = (config.get("device-to-host") == "pinned"
              and device.platform not in _STATE.pinned_unavailable)
    if pinned:
        try:
            sharding = jax.sharding.SingleDeviceSharding(device, memory_kind="pinned_host")
            pieces = [jax.device_put(piece, sharding) for piece in pieces]
        except Exception:  # noqa: BLE001 - no pinned host memory on this backend
            _STATE.pinned_unavailable.add(device.platform)
            pinned = False
    if not pinned:
        for piece in pieces:
            piece.copy_to_host_async()
    for offset, piece in zip(offsets, pieces):
        yield offset, np.asarray(piece)


def _ordered_positions(source, spec: RenderSpec, plan: AtomPlan, index: int) -> np.ndarray:
    """Conformation `index`'s positions (1, n, 3) in the plan's order, kept for the next
    slab or atom group of the same conformation on this worker (one conformation: a
    10.8M-atom read and gather cost a second each)."""
    key = (_source_key(source), spec.centre, index)
    return _STATE.positions.get_or_make(
        key, lambda: _read(source, spec, index, index + 1)[:, plan.order])


def render_slab(source, spec: RenderSpec, index: int, z0: int, z1: int) -> dict:
    """Render planes [z0, z1) of one conformation from the atoms that touch them; write.
    Returns the atoms used, where the time went (s: `select` atoms on the host, `render`
    on the device and copy back, `write`), renderers built so far and peak memory."""
    t0 = time.perf_counter()
    plan = support_plan(source, spec)
    positions = _ordered_positions(source, spec, plan, index)
    from ..simulator import atoms_touching_planes

    mask = atoms_touching_planes(positions[0], spec.shape, spec.voxel_size,
                                 plan.sorted_support, z0, z1)
    t1 = t2 = time.perf_counter()
    if not mask.any():  # an empty slab: zeros, still written
        slab = np.zeros((1, z1 - z0) + spec.shape[1:], np.float32)
    else:
        positions, amplitudes, variances, groups = _select(positions, plan, mask)
        t1 = time.perf_counter()
        run = batch_renderer(spec.shape, spec.voxel_size, groups, z1 - z0)
        slab = np.asarray(run(positions, amplitudes, variances, z0))
        t2 = time.perf_counter()
    store_writer(spec).write_volumes(index, slab, z_start=z0)
    t3 = time.perf_counter()
    return {"index": index, "z0": z0, "atoms": int(mask.sum()),
            "seconds": t3 - t0, "select_s": t1 - t0, "render_s": t2 - t1, "write_s": t3 - t2,
            "pid": os.getpid(), "compiles": compile_count(), "peak_rss_mib": _peak_rss_mib(),
            "peak_device_mib": _peak_device_mib()}


def _peak_rss_mib() -> float:
    """This worker process's peak resident memory so far, MiB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _peak_device_mib() -> float | None:
    """Peak memory of the worker's first accelerator, MiB (None on CPU)."""
    import jax

    device = jax.devices()[0]
    if device.platform == "cpu":
        return None
    stats = device.memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else peak / 2**20


def render_atom_group(source, spec: RenderSpec, index: int, a0: int, a1: int) -> np.ndarray:
    """The partial volume of (sorted) atoms [a0, a1) of one conformation, to be summed."""
    plan = support_plan(source, spec)
    positions = _ordered_positions(source, spec, plan, index)
    ids = np.arange(plan.amplitudes.shape[0])
    positions, amplitudes, variances, groups = _select(positions, plan, (ids >= a0) & (ids < a1))
    run = batch_renderer(spec.shape, spec.voxel_size, groups)
    return np.asarray(run(positions, amplitudes, variances, 0))[0]


def add_volumes(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a + b


def write_conformation(spec: RenderSpec, index: int, volume: np.ndarray) -> dict:
    writer = store_writer(spec)
    writer.write_volumes(index, volume[None])
    writer.mark_rendered(index, index + 1)
    return {"index": index}


def mark_done(spec: RenderSpec, index: int, *slab_results) -> dict:
    """Mark a slab-split conformation done once all its slabs are written."""
    store_writer(spec).mark_rendered(index, index + 1)
    return {"index": index, "slabs": len(slab_results), "slab_results": list(slab_results)}
