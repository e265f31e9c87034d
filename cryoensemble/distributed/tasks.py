"""What Dask workers run: read a range of conformations, render it, write it.

Compiled renderers are cached per worker process (`WorkerState`), keyed by everything
static (grid, support, atom count, batch), so a worker compiles once per source and reuses
it for every batch; batches are padded to the planned size and atom counts to a few sizes.
"""

import collections
import dataclasses
import functools
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
    - `positions`: the last conformation read in plan order (its slabs follow one
      another), on the host or (slabs) on the device.
    - `renderers`: compiled renderers by static key.
    - `pinned_unavailable`: platforms without pinned host memory; `compiles`: renderers
      built so far.
    - `writers`: open store writers by (store, generation).
    - `encoders`: device chunk encoders by (array cutting, device); `device_codec`: whether
      nvCOMP runs here (None until asked); `batch_limits`: the most conformations per
      batch by (grid, renderer), from device memory and lowered after an out-of-memory.
    - `device_plans`: a plan's permutation and mixture rows on the device (slabs).
    - `sources`: sources read from files, kept with their open readers (`kept_source`).
    - `write_behind`: the thread that stores a batch's compressed objects while the task
      renders the next batch (`render_conformations`); started on first use.
    - `read_ahead`: the thread that reads a task's next batch while this one renders;
      started on first use.
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
        self.device_plans = _Bounded(2)
        self.sources = _Bounded(4)
        self.write_behind = None
        self.read_ahead = None

    def write_behind_pool(self):
        """The single write-behind thread (one, so a process's writes keep their order and
        each write's I/O-thread time is its own)."""
        if self.write_behind is None:
            self.write_behind = _one_thread("cryoensemble-write-behind")
        return self.write_behind

    def read_ahead_pool(self):
        """The single read-ahead thread (one: a source's reader serves one read at a time)."""
        if self.read_ahead is None:
            self.read_ahead = _one_thread("cryoensemble-read-ahead")
        return self.read_ahead


def _one_thread(name: str):
    import concurrent.futures

    return concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)


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


def _atoms_key(source) -> str:
    """What identifies a source's atoms, whatever their positions (`atoms_description`)."""
    return json.dumps(source.atoms_description(), sort_keys=True, default=str)


def _source_key(source) -> str:
    """What identifies a source's conformations: its description (files, frames,
    selections, seeds)."""
    return json.dumps(source.description(), sort_keys=True, default=str)


def kept_source(source):
    """This process's copy of an equal source from an earlier task or render: for a
    source read from files (same description; the files' sizes and modification times
    unchanged), the first copy is kept with what it opened (an MDAnalysis Universe,
    parsed models), which each newly unpickled copy would open again; a source of other
    conformations of the same atoms and files (other frames) takes over what the last
    such copy opened. A source without files is used as given."""
    files = source.input_files()
    if not files:
        return source
    try:
        stats = tuple((f, os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in files)
    except OSError:
        return source  # its own read names the missing file
    key = (type(source).__qualname__, _source_key(source), stats)
    if key in _STATE.sources:
        return _STATE.sources.get_or_make(key, lambda: source)
    # Other conformations of the same atoms from the same files (the next frames of a
    # trajectory): what an earlier source opened serves this one too.
    same_atoms = (type(source).__qualname__, _atoms_key(source), stats)
    earlier = next((kept for (kind, _, kept_stats), kept in reversed(_STATE.sources.items())
                    if (kind, _atoms_key(kept), kept_stats) == same_atoms), None)
    if earlier is not None:
        source.reuse_open_files(earlier)
    return _STATE.sources.get_or_make(key, lambda: source)


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

        elements, inverse = _distinct(np.asarray(source.atomic_numbers))
        a, b = peng_parameters_numpy(elements)  # names bad elements
        return (np.asarray(a, np.float32),
                np.asarray(b_factor_to_variance_numpy(b + float(extra_b_factor)), np.float32),
                inverse)

    return _STATE.mixtures.get_or_make((_atoms_key(source), float(extra_b_factor)), make)


def _distinct(numbers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`np.unique(numbers, return_inverse=True)` (inverse as int32), by counting where the
    numbers are small non-negative integers (atomic numbers: millions of atoms, no sort)."""
    numbers = numbers.reshape(-1)
    if (numbers.size and np.issubdtype(numbers.dtype, np.integer)
            and 0 <= numbers.min() and numbers.max() < 4096):
        present = np.flatnonzero(np.bincount(numbers))
        table = np.zeros(int(present[-1]) + 1, np.int32)
        table[present] = np.arange(len(present), dtype=np.int32)
        return present.astype(numbers.dtype), table[numbers]
    elements, inverse = np.unique(numbers, return_inverse=True)
    return elements, inverse.reshape(-1).astype(np.int32)


def mixture(source, extra_b_factor: float):
    """(amplitudes, variances), float32 (n_atoms, n_gaussians), of a source's atoms:
    its own mixture if it has one, else Peng (1996) with `extra_b_factor` added."""
    a, v, inverse = _mixture_rows(source, extra_b_factor)
    return (a, v) if inverse is None else (a[inverse], v[inverse])


def atom_amplitudes(source) -> np.ndarray:
    """Each atom's total amplitude (A, the sum over its gaussians; its scattering weight),
    float32 (n_atoms,), summed per mixture row and then spread to the atoms."""
    a, _, inverse = _mixture_rows(source, 0.0)
    total = a.sum(axis=1)
    return total if inverse is None else total[inverse]


@dataclasses.dataclass(frozen=True)
class AtomPlan:
    """A source's atoms in support-plan order: `support.order` permutes the source's
    atoms, `support.groups` is `((n, radius, k), ...)` over the permuted atoms. Mixtures
    are kept per distinct row (`row_amplitudes`, `row_variances`: per element, or per atom
    for a source with its own mixture), `rows` is each permuted atom's row (None: the
    rows are the permuted atoms themselves)."""

    support: "SupportPlan"
    row_amplitudes: np.ndarray
    row_variances: np.ndarray
    rows: np.ndarray | None

    @property
    def n_atoms(self) -> int:
        return self.support.n_atoms

    @property
    def order(self) -> np.ndarray:
        return np.arange(self.n_atoms) if self.support.order is None else self.support.order

    @property
    def groups(self) -> tuple:
        return self.support.groups

    @functools.cached_property
    def amplitudes(self) -> np.ndarray:
        """Per permuted atom (n, n_gaussians), expanded on first use."""
        return self.row_amplitudes if self.rows is None else self.row_amplitudes[self.rows]

    @functools.cached_property
    def variances(self) -> np.ndarray:
        return self.row_variances if self.rows is None else self.row_variances[self.rows]

    @property
    def sorted_support(self) -> "SupportPlan":
        """The plan of the atoms once permuted (no order)."""
        from ..simulator import SupportPlan

        return SupportPlan(None, self.support.groups)


def support_plan(source, spec: RenderSpec) -> AtomPlan:
    """The (cached) support plan of a source's atoms for this grid and bound: sized per
    distinct mixture row (per element), then the atoms grouped by their row's window
    (no per-atom sizing or sort: 10.8M atoms in well under a second)."""
    from ..simulator import SupportPlan

    def make():
        a, v, inverse = _mixture_rows(source, spec.extra_b_factor)
        if inverse is None:
            plan = SupportPlan.from_mixture(a, v, spec.voxel_size, spec.truncation)
            if plan.order is not None:
                a, v = a[plan.order], v[plan.order]
            return AtomPlan(plan, a, v, None)
        by_row = SupportPlan.from_mixture(a, v, spec.voxel_size, spec.truncation)
        # Each row's window, then the atoms by window (stable: atom order kept within a
        # group), as SupportPlan.from_mixture(..., rows_of_atoms=inverse) orders them.
        row_order = np.arange(len(a)) if by_row.order is None else by_row.order
        k_of_row = np.repeat([k for _, _, k in by_row.groups], [n for n, _, _ in by_row.groups])
        window = np.empty(len(a), np.int64)
        window[row_order] = k_of_row
        counts = np.bincount(inverse, minlength=len(a))
        groups, members = [], []
        for n_rows, radius, k in by_row.groups:
            in_group = window == k
            atoms_in_group = np.flatnonzero(in_group[inverse]) if len(by_row.groups) > 1 else None
            groups.append((int(counts[in_group].sum()), radius, k))
            members.append(atoms_in_group)
        if len(groups) > 1:
            order = np.concatenate(members)
            return AtomPlan(SupportPlan(order, groups), a, v, inverse[order])
        return AtomPlan(SupportPlan(None, groups), a, v, inverse)

    key = (_atoms_key(source), spec.extra_b_factor, spec.voxel_size, spec.truncation)
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
    kept, counts, first = [], [], 0
    for count, _, _ in plan.groups:
        chosen = np.flatnonzero(mask[first : first + count]) + first
        first += count
        counts.append(len(chosen))
        if len(chosen):
            padding = np.full(padded_atom_count(len(chosen)) - len(chosen), -1)
            kept.append(np.concatenate([chosen, padding]))
    index = np.concatenate(kept)
    real = index >= 0
    rows = index if plan.rows is None else plan.rows[index]
    p = positions[:, index]
    p[:, ~real] = 0.0
    a = np.where(real[:, None], plan.row_amplitudes[rows], np.float32(0.0))
    v = np.where(real[:, None], plan.row_variances[rows], np.float32(1.0))
    groups, _ = _pad_groups(plan.groups, counts)
    return p, a, v, groups


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
ADDENDS_PER_PASS = 2**26


def atom_passes(groups) -> int:
    """Passes over each support group's atoms (`GaussianMixtureRenderFn`'s `n_batches`) so
    that at most `ADDENDS_PER_PASS` window voxels are in flight; 1 for proteins. The
    passes add the atoms in the same order, so results are unchanged (bit for bit on CPU)."""
    return max([1] + [-(-n * k**3 // ADDENDS_PER_PASS) for n, _, k in groups])


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
    everything = np.ones(plan.n_atoms, bool)
    positions, amplitudes, variances, groups = _select(positions[:, plan.order], plan, everything)
    run = batch_renderer(spec.shape, spec.voxel_size, groups)
    return run(positions, amplitudes, variances, 0)


def render_conformations(source, spec: RenderSpec, start: int, stop: int) -> dict:
    """Render conformations `[start, stop)`, write them, then mark them done.

    On a GPU worker with nvCOMP (`cryoensemble.device-compression: auto`) each batch is
    cut into the store's chunks and zstd-compressed on the device, and only the
    compressed objects reach the host; a write-behind thread stores them
    (`StoreWriter.write_objects`) while the next batch renders, and a read-ahead thread
    reads the next batch meanwhile, so the task runs in a few batches
    (`_PIPELINE_BATCHES`) and the disk's latency hides behind the device's work.
    Elsewhere the batch reaches the host in pieces (`host_pieces`), each written through
    zarr's codec pipeline. The range runs in batches that fit the worker's device memory
    (`fitting_batch`); a batch that runs out of device memory is retried in halves, and
    the smaller size is kept for later tasks. The marker is written only after every
    batch's objects are stored.

    Returns the range, the bytes rendered, the renderers compiled, the bytes copied to the
    host (`to_host_bytes`) and written (`written_bytes`), where the task's time went (s: `read` (ahead
    of the batch where a read-ahead thread reads), `read_wait` (for the batch read ahead), `render` until
    the device is done, `encode` on the device, `to_host`, `write` (host encoding, when
    zarr's codec runs, and storing; behind the next batch where objects come compressed
    from the device), `flush` (waits for writes behind), `mark`), the host-core
    time per stage of the threads running it (`cpu_user_s`/`cpu_system_s`: {stage: s}),
    and the worker process and when the task `started` and `finished` (epoch s).
    """
    started = time.time()
    source = kept_source(source)
    behind = encodes_on_device()
    profile = _Profile(per_thread=behind)
    compiles = _STATE.compiles
    fits = fitting_batch(spec)
    size = spec.batch_size
    if behind:
        fits = min(fits, _pipeline_batch(size))
    # Equal batches of the planned size's parts (the same few sizes on every task: one
    # compile each), not a full batch and a padded remainder.
    if fits < size:
        size = -(-size // -(-size // fits))
    writes: list = []
    ahead = None  # (first, stop, size, future): the batch the read-ahead thread reads
    a = start
    try:
        while a < stop:
            b = min(stop, a + size)
            # At most two batches stored behind; their errors fail the task (outside the
            # retry below: a batch whose write failed must not be marked).
            with profile.stage("flush"):
                while len(writes) >= 2:
                    writes.pop(0).result()
            positions = None
            if behind:  # this batch as read ahead, and the next one read while it renders
                if ahead is None or ahead[:3] != (a, b, size):
                    ahead = _read_ahead(source, spec, a, b, size, profile)
                with profile.stage("read_wait"):
                    positions = ahead[3].result()
                ahead = (_read_ahead(source, spec, b, min(stop, b + size), size, profile)
                         if b < stop else None)
            try:
                _render_and_write(source, spec, a, b, size, profile, writes, positions)
            except Exception as error:  # noqa: BLE001 - only device OOM is retried
                if size == 1 or not is_device_out_of_memory(error):
                    raise
                size = max(1, size // 2)
                _STATE.batch_limits[_batch_key(spec)] = size
                profile.retries += 1
                continue
            a = b
        with profile.stage("flush"):
            _finish_writes(writes)
    finally:
        _finish_writes(writes, quietly=True)  # no write outlives a failed task
    with profile.stage("mark"):
        store_writer(spec).mark_rendered(start, stop)
    volume_bytes = int(np.prod(spec.shape)) * 4
    return {"start": start, "stop": stop, "bytes": volume_bytes * (stop - start),
            "batch": size, "retries": profile.retries, "peak_device_mib": _peak_device_mib(),
            "compiles": _STATE.compiles - compiles, "pid": os.getpid(), "started": started,
            "finished": time.time(), **profile.result()}


# Where a write-behind thread stores each batch while the next renders, a task of at least
# twice `_MIN_PIPELINE_BATCH` conformations runs in `_PIPELINE_BATCHES` batches. Few and
# large: nvCOMP's zstd compresses each chunk in one pass of its own, so a call takes about
# as long for 64 volumes as for 256 (benchmarks/device_codec.py), and smaller batches
# would leave the device idle.
_PIPELINE_BATCHES = 2
_MIN_PIPELINE_BATCH = 64


def _pipeline_batch(task_size: int) -> int:
    """The batch size that splits a task of `task_size` conformations into up to
    `_PIPELINE_BATCHES` equal batches of at least `_MIN_PIPELINE_BATCH`."""
    parts = max(1, min(_PIPELINE_BATCHES, task_size // _MIN_PIPELINE_BATCH))
    return -(-task_size // parts)


def _read_ahead(source, spec: RenderSpec, a: int, b: int, size: int, profile) -> tuple:
    """Start reading conformations [a, b), padded to `size`, on the read-ahead thread."""

    def read():
        with profile.stage("read"):
            return _pad_batch(_read(source, spec, a, b), size)

    return a, b, size, _STATE.read_ahead_pool().submit(read)


def _finish_writes(writes: list, quietly: bool = False) -> None:
    """Wait for the write-behind futures in `writes` (emptied), raising the first error
    unless `quietly` (a task already failing waits only so that nothing outlives it)."""
    while writes:
        future = writes.pop(0)
        if quietly:
            future.exception()
        else:
            future.result()


class _Profile:
    """Wall time and host-core (user/system) time per task stage: of the whole process
    where stages run one after another, else (`per_thread`: the write-behind path) of the
    thread that runs the stage plus, for `write`, the I/O threads it starts, so that
    stages running at once are each counted once."""

    STAGES = ("read", "read_wait", "render", "encode", "to_host", "write", "flush", "mark")

    def __init__(self, per_thread: bool = False):
        import resource
        import threading

        self._scope = resource.RUSAGE_THREAD if per_thread else resource.RUSAGE_SELF

        self.wall = dict.fromkeys(self.STAGES, 0.0)
        self.user = dict.fromkeys(self.STAGES, 0.0)
        self.system = dict.fromkeys(self.STAGES, 0.0)
        self.to_host_bytes = 0
        self.written_bytes = 0
        self.retries = 0
        self._lock = threading.Lock()

    def stage(self, name: str, io_cpu=None):
        """Time a block of this thread as stage `name`; `io_cpu`, a callable returning the
        (user, system) s spent so far by I/O threads the block starts, adds theirs."""
        import contextlib
        import resource

        @contextlib.contextmanager
        def timed():
            usage = resource.getrusage(self._scope)
            io = io_cpu() if io_cpu else (0.0, 0.0)
            t = time.perf_counter()
            try:
                yield
            finally:
                wall = time.perf_counter() - t
                after = resource.getrusage(self._scope)
                io_after = io_cpu() if io_cpu else (0.0, 0.0)
                with self._lock:
                    self.wall[name] += wall
                    self.user[name] += after.ru_utime - usage.ru_utime + io_after[0] - io[0]
                    self.system[name] += after.ru_stime - usage.ru_stime + io_after[1] - io[1]

        return timed()

    def count_written(self, n_bytes: int) -> None:
        """Add bytes stored (from any thread)."""
        with self._lock:
            self.written_bytes += n_bytes

    def result(self) -> dict:
        return {**{f"{k}_s": v for k, v in self.wall.items()},
                "cpu_user_s": dict(self.user), "cpu_system_s": dict(self.system),
                "to_host_bytes": self.to_host_bytes, "written_bytes": self.written_bytes}


def _render_and_write(source, spec: RenderSpec, a: int, b: int, size: int, profile,
                      writes: list, positions=None) -> None:
    """Render conformations [a, b) as one batch padded to `size` (`positions` if read
    already), write their shards (on the device-compressed path: hand them to the
    write-behind thread, appending its future to `writes`)."""
    if positions is None:
        with profile.stage("read"):
            positions = _pad_batch(_read(source, spec, a, b), size)
    with profile.stage("render"):
        volumes = _render_batch(source, spec, positions)
        _wait_until_ready(volumes)
    writer = store_writer(spec)
    encoder = _device_encoder(spec, writer, volumes)
    if encoder is not None:
        with profile.stage("encode"):
            # The whole padded batch is cut into chunks, its padding never compressed: the
            # real volumes alone would be a new shape (one compile) for each last batch.
            blocks, keep = encoder.chunks(volumes)
            real = len(keep) // size * (b - a)
            keep[real:] = False
            frames = encoder.compress(blocks, keep)
        with profile.stage("to_host"):
            payload = encoder.fetch(frames)
            profile.to_host_bytes += sum(len(p) for p in payload)
        del blocks, frames
        with profile.stage("write"):
            # Bytes objects: the staging buffer under `payload` is reused by the next fetch.
            objects = encoder.assemble(payload, keep[:real], a)
        writes.append(_STATE.write_behind_pool().submit(_write_objects, writer, objects, profile))
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


def _write_objects(writer, objects: dict, profile) -> None:
    """The write-behind thread's work: store one batch's objects (fsynced)."""
    with profile.stage("write", lambda: writer.io_cpu_s):
        profile.count_written(writer.write_objects(objects))


def _wait_until_ready(array) -> None:
    from ._device_codec import wait_until_ready

    wait_until_ready(array)


def _device_encoder(spec: RenderSpec, writer, volumes):
    """This worker's `ZarrChunkEncoder` (nvCOMP) for the store's `potential`, when the
    batch is on a CUDA device, nvCOMP is installed and `cryoensemble.device-compression`
    allows it; None means zarr's own CPU codec."""
    device = next(iter(volumes.devices()))
    if device.platform != "gpu" or not encodes_on_device():
        return None
    from ._device_codec import ZarrChunkEncoder

    array = writer.potential_array

    def make():
        return ZarrChunkEncoder(array, compressor="nvcomp")

    # An encoder depends on the array's volume shape, chunking and codecs only, not on
    # which store holds it: stores cut alike share one (and its nvCOMP codec, stream and
    # buffers) instead of each render making another.
    metadata = {k: v for k, v in array.metadata.to_dict().items()
                if k not in ("shape", "attributes")}
    key = (tuple(array.shape[1:]), json.dumps(metadata, sort_keys=True, default=str), device.id)
    return _STATE.encoders.get_or_make(key, make)


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


class _DeviceConformation:
    """One conformation on the worker's device, in plan order, with what its slabs share:
    `positions` (n, 3) A, `first_planes` (n,) (`window_first_planes`), `rows` (rows (n,)
    int32 into the plan's mixture rows, row amplitudes, row variances), and per slab
    height the padded atom count of each group (`capacities`)."""

    def __init__(self, positions, first_planes, rows, uploaded_bytes: int):
        self.positions = positions
        self.first_planes = first_planes
        self.rows = rows
        self.uploaded_bytes = uploaded_bytes
        self.capacities: dict[int, tuple[int, ...]] = {}


def _device_conformation(source, spec: RenderSpec, plan: AtomPlan, index: int):
    """Conformation `index` on this worker's device in plan order (read on the host; the
    centre subtracted, the atoms permuted and their windows placed on the device), kept
    for the next slabs of the same conformation on this worker. Returns it and whether
    it was read now."""
    key = ("device", _source_key(source), spec.centre, spec.shape, spec.voxel_size,
           spec.truncation, spec.extra_b_factor, index)
    if key in _STATE.positions:
        return _STATE.positions[key], False
    _STATE.positions.clear()  # the last conformation's device memory goes first
    host = source.read(index, index + 1)[0]
    centre = np.asarray(spec.centre, np.float32)
    if host.dtype != np.float32:  # `_read`'s arithmetic, on the host
        host, centre = _read(source, spec, index, index + 1)[0], np.zeros(3, np.float32)
    order = None if plan.support.order is None else _device_order(source, spec, plan)
    prepare = _conformation_preparer(spec.shape, spec.voxel_size, plan.groups, order is not None)
    positions, first_planes = prepare(host, centre, order)
    _wait_until_ready(first_planes)
    conformation = _DeviceConformation(positions, first_planes, _device_rows(source, spec, plan),
                                       host.nbytes)
    _STATE.positions[key] = conformation
    return conformation, True


def _conformation_preparer(shape, voxel_size, groups, permuted: bool):
    """A jitted `(positions (n, 3) as read, centre (3,), order or None) -> (positions in
    plan order minus the centre, their window_first_planes)`: one pass on the device,
    the float32 subtraction `_read` does on the host."""

    def make():
        import jax

        from ..simulator import SupportPlan, window_first_planes

        _STATE.compiles += 1

        @jax.jit
        def run(positions, centre, order):
            positions = positions - centre
            if permuted:
                positions = positions[order]
            return positions, window_first_planes(positions, shape, voxel_size,
                                                  SupportPlan(None, groups))

        return run

    return _STATE.renderers.get_or_make(("slab-prepare", shape, voxel_size, groups, permuted),
                                        make)


def _device_order(source, spec: RenderSpec, plan: AtomPlan):
    """The plan's permutation on the device (int32), kept with the plan."""
    import jax

    key = ("order", _atoms_key(source), spec.extra_b_factor, spec.voxel_size, spec.truncation)
    return _STATE.device_plans.get_or_make(
        key, lambda: jax.device_put(plan.order.astype(np.int32)))


def _device_rows(source, spec: RenderSpec, plan: AtomPlan):
    """(rows (n,) int32, row amplitudes, row variances) on the device, kept with the plan."""
    import jax

    def make():
        rows = np.arange(plan.n_atoms) if plan.rows is None else plan.rows
        return (jax.device_put(rows.astype(np.int32)), jax.device_put(plan.row_amplitudes),
                jax.device_put(plan.row_variances))

    key = ("rows", _atoms_key(source), spec.extra_b_factor, spec.voxel_size, spec.truncation)
    return _STATE.device_plans.get_or_make(key, make)


def slab_starts(nz: int, z_size: int) -> list[int]:
    """First plane of each slab of `z_size` planes; the last one ends at the grid's end
    (overlapping its neighbour), so every slab has one shape: one compilation."""
    return [min(z0, nz - z_size) for z0 in range(0, nz, z_size)]


def _slab_capacities(conformation: _DeviceConformation, plan: AtomPlan, spec: RenderSpec,
                     z_size: int) -> tuple[int, ...]:
    """Per support group, the most of its atoms any slab of `z_size` planes needs, rounded
    up to a few sizes (`padded_atom_count`; 0 for a group no slab needs): every slab of
    the conformation is padded to these, so one selection and one renderer serve them
    all (and, the sizes being coarse, the other conformations of an ensemble)."""
    if z_size not in conformation.capacities:
        import jax.numpy as jnp

        count = _slab_counter(plan.groups, z_size)
        starts = jnp.asarray(slab_starts(spec.shape[0], z_size), jnp.int32)
        most = np.asarray(count(conformation.first_planes, starts)).max(axis=0)
        conformation.capacities[z_size] = tuple(padded_atom_count(int(n)) if n else 0
                                                for n in most)
    return conformation.capacities[z_size]


def _group_bounds(groups) -> list[tuple[int, int]]:
    ends = np.cumsum([0] + [n for n, _, _ in groups])
    return list(zip(ends[:-1].tolist(), ends[1:].tolist()))


def _slab_counter(groups, z_size):
    """A jitted `(first planes, slab starts (s,)) -> (s, n_groups)`: each slab's atoms
    per group."""

    def make():
        import jax
        import jax.numpy as jnp

        from ..simulator import SupportPlan, touching_planes_mask

        _STATE.compiles += 1
        plan = SupportPlan(None, groups)

        @jax.jit
        def run(first_planes, starts):
            def one(z0):
                mask = touching_planes_mask(first_planes, plan, z0, z0 + z_size)
                return jnp.stack([mask[a:b].sum() for a, b in _group_bounds(groups)])

            return jax.lax.map(one, starts)

        return run

    return _STATE.renderers.get_or_make(("slab-count", groups, z_size), make)


def _slab_selector(groups, capacities, z_size):
    """A jitted `(positions, first planes, rows, row amplitudes, row variances, z0) ->
    (positions, amplitudes, variances, counts)`: the atoms that touch planes
    [z0, z0 + z_size), group by group in plan order, each group padded to its capacity
    with zero-amplitude atoms (they add exact zeros), as `_select` keeps them on the host."""

    def make():
        import jax
        import jax.numpy as jnp

        from ..simulator import SupportPlan, touching_planes_mask

        _STATE.compiles += 1
        plan = SupportPlan(None, groups)

        @jax.jit
        def run(positions, first_planes, rows, row_amplitudes, row_variances, z0):
            mask = touching_planes_mask(first_planes, plan, z0, z0 + z_size)
            index, real, counts = [], [], []
            for (a, b), capacity in zip(_group_bounds(groups), capacities):
                counts.append(mask[a:b].sum())
                if capacity:
                    index.append(jnp.nonzero(mask[a:b], size=capacity, fill_value=0)[0] + a)
                    real.append(jnp.arange(capacity) < counts[-1])
            index, real = jnp.concatenate(index), jnp.concatenate(real)[:, None]
            atom_rows = rows[index]
            return (jnp.where(real, positions[index], 0.0),
                    jnp.where(real, row_amplitudes[atom_rows], 0.0),
                    jnp.where(real, row_variances[atom_rows], 1.0), jnp.stack(counts))

        return run

    return _STATE.renderers.get_or_make(("slab-select", groups, capacities, z_size), make)


class _Stages:
    """Wall and host-core (user, system) seconds per stage of one task, from one clock
    reading at each stage's end."""

    def __init__(self):
        self.seconds: dict[str, list[float]] = {}
        self._last = self._now()

    @staticmethod
    def _now() -> tuple[float, float, float]:
        import resource

        usage = resource.getrusage(resource.RUSAGE_SELF)
        return time.perf_counter(), usage.ru_utime, usage.ru_stime

    def done(self, stage: str) -> None:
        now = self._now()
        totals = self.seconds.setdefault(stage, [0.0, 0.0, 0.0])
        for i, (a, b) in enumerate(zip(self._last, now)):
            totals[i] += b - a
        self._last = now

    def result(self) -> dict:
        return {f"{stage}_{what}": value for stage, values in self.seconds.items()
                for what, value in zip(("s", "user_s", "system_s"), values)}


def render_slab(source, spec: RenderSpec, index: int, z0: int, z1: int,
                z_size: int | None = None) -> dict:
    """Render planes [z0, z1) of one conformation from the atoms that touch them; write.
    `z_size`: the height of the layout's slabs (default `z1 - z0`).

    The conformation goes to the device once per worker (its slabs follow one another);
    there each slab selects its atoms (`touching_planes_mask`) into groups of sizes fixed
    per conformation and slab height (`_slab_capacities`), so every slab of every
    conformation runs the same compiled selection and renderer. A slab shorter than the
    others (the grid's last) is rendered at the common height ending at the grid's end
    and cut. Returns the atoms used, each stage's wall and host-core (user, system)
    seconds (`plan`: the support plan, once per source; `read`: host read, upload, window
    planes and slab capacities, once per conformation; `select`, `render` (compiles
    included, once); `encode` (zstd on the device and the compressed shard to the host,
    where nvCOMP runs) or `to_host`; `write`; the device stages end when the device is
    done), bytes moved, renderers built so far, peak memory, and when the task `started`
    and `finished` (seconds since the epoch: a timeline across the workers of a host).
    """
    started = time.time()
    stages = _Stages()
    source = kept_source(source)
    plan = support_plan(source, spec)
    stages.done("plan")
    conformation, fresh = _device_conformation(source, spec, plan, index)
    z_size = max(z1 - z0, z_size or 0)
    start = min(z0, spec.shape[0] - z_size)
    capacities = _slab_capacities(conformation, plan, spec, z_size)
    stages.done("read")
    atoms = 0
    if any(capacities):
        select = _slab_selector(plan.groups, capacities, z_size)
        positions, amplitudes, variances, counts = select(
            conformation.positions, conformation.first_planes, *conformation.rows, start)
        counts = np.asarray(counts)
        atoms = int(counts.sum())
        if np.any(counts > np.asarray(capacities)):
            raise RuntimeError(f"render_slab: planes [{z0}, {z1}) need {counts.tolist()} atoms "
                               f"per group, over the capacities {capacities}")
        stages.done("select")
        padded = tuple((c, r, k) for c, (_, r, k) in zip(capacities, plan.groups) if c)
        run = batch_renderer(spec.shape, spec.voxel_size, padded, z_size)
        device_slab = run(positions[None], amplitudes, variances, start)
        _wait_until_ready(device_slab)
        stages.done("render")
        cut = device_slab[:, z0 - start : z1 - start]
    else:  # no atom reaches the grid: zeros, still written
        stages.done("select")
        cut = np.zeros((1, z1 - z0) + spec.shape[1:], np.float32)
        stages.done("render")
    writer = store_writer(spec)
    encoder = _device_encoder(spec, writer, cut) if atoms else None
    if encoder is not None:  # compressed on the device: only the shard's bytes cross
        objects = encoder.encode_slab(cut, index, z0)
        to_host = sum(len(v) for v in objects.values() if v is not None)
        stages.done("encode")
        writer.write_objects(objects)
    else:
        slab = np.asarray(cut)
        to_host = slab.nbytes
        stages.done("to_host")
        writer.write_volumes(index, slab, z_start=z0)
    stages.done("write")
    return {"index": index, "z0": z0, "atoms": atoms,
            "to_device_bytes": conformation.uploaded_bytes if fresh else 0,
            "to_host_bytes": to_host, **stages.result(),
            "seconds": sum(stages.seconds[s][0] for s in stages.seconds),
            "pid": os.getpid(), "compiles": compile_count(), "peak_rss_mib": _peak_rss_mib(),
            "peak_device_mib": _peak_device_mib(), "started": started, "finished": time.time()}


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
    source = kept_source(source)
    plan = support_plan(source, spec)
    positions = _ordered_positions(source, spec, plan, index)
    ids = np.arange(plan.n_atoms)
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
