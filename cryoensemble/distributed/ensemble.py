"""render_ensemble: an ensemble source to a labeled zarr stack, through a Dask graph.

The client plans and sizes; workers read, render and write. Each task owns whole chunks
(conformations, or z-slabs of one conformation), so no two tasks write the same chunk and
no volume passes through the client. Huge atom sets are split by z-slabs (each task the
atoms that touch its slab; bit for bit the unsplit volume on CPU) or by atom groups summed
in a tree.
"""

import contextlib
import dataclasses
import datetime
import math
import os
import sys
import time
import uuid
from typing import Literal

import numpy as np

from .. import store as store_module
from ..coordinates import as_grid_shape
from ..sources import AbstractEnsembleSource, file_sha256
from . import _checks, config, tasks
from .cluster import connect, reporting_worker_losses


@dataclasses.dataclass(frozen=True)
class RenderPlan:
    """What a render will do, validated and sized once: printed by `--dry-run`, run by
    `run_plan`.

    - `source`, `spec` (what each task needs), `layout` of the store, `split` and
      `n_batches` (atoms split by z-slabs or atom groups), `todo` (the conformations
      still to render; `auto_batch` if the batch size was sized from the workers),
      `parameters` and `attributes` recorded in the store, `n_done` already there, the
      largest support radius and window.
    """

    source: AbstractEnsembleSource
    spec: tasks.RenderSpec
    layout: store_module.StoreLayout
    split: str
    n_batches: int
    todo: tuple
    auto_batch: bool
    parameters: dict
    attributes: dict
    n_done: int
    support_radius: float
    window: int

    @property
    def store(self) -> "store_module.StoreLocation":
        return self.spec.store

    @property
    def n_conformations(self) -> int:
        return self.layout.n_conformations

    @property
    def batch_size(self) -> int:
        return self.spec.batch_size

    @property
    def runs(self) -> tuple:
        """`(start, stop)` of the conformations each task (or slab-split one) renders."""
        return _runs(np.asarray(self.todo, np.int64), self.batch_size, self.n_batches)

    def for_workers(self, n_workers: int, device_encoded: bool = False,
                    memory_bytes: int | None = None) -> "RenderPlan":
        """The plan with its batch size sized for `n_workers` tasks at once (unless given);
        `device_encoded`: the workers compress on their devices; `memory_bytes`: host
        memory per task slot (see `default_batch_size`)."""
        if not self.auto_batch or self.n_batches > 1:
            return self
        size = default_batch_size(len(self.todo), n_workers, int(np.prod(self.spec.shape)) * 4,
                                  device_encoded, memory_bytes)
        return dataclasses.replace(self, spec=dataclasses.replace(self.spec, batch_size=size))

    @property
    def n_tasks(self) -> int:
        return len(self.runs) * (1 if self.n_batches == 1 else self.n_batches + 1)

    @property
    def memory_per_task_bytes(self) -> int:
        volume_bytes = int(np.prod(self.spec.shape)) * 4
        if self.n_batches > 1 and self.split == "slabs":
            # The slab, the conformation with its plan (~64 B per atom, host and device),
            # and the window voxels of one atom pass (`tasks.atom_passes`).
            slab_bytes = volume_bytes * self.layout.z_chunk // self.spec.shape[0]
            in_flight = min(self.source.n_atoms * self.window**3, tasks.ADDENDS_PER_PASS)
            return int(slab_bytes + 64 * self.source.n_atoms + 16 * in_flight)
        atoms_per_task = self.source.n_atoms / self.n_batches
        return int(self.spec.batch_size * volume_bytes + atoms_per_task * self.window**3 * 4 * 1.5)

    def summary(self) -> str:
        todo = self.n_conformations - self.n_done
        lines = [
            f"store            {self.store}",
            f"conformations    {self.n_conformations} ({self.n_done} already done, {todo} to render)",
            f"grid             {'x'.join(map(str, self.layout.shape))} {self.layout.dtype}, "
            f"chunks {self.layout.chunks}",
            f"renderer         {tasks.RENDERERS[self.spec.renderer].description}",
            f"support          up to {self.support_radius:.2f} A ({self.window}^3 voxels per atom)",
            f"atom split       {self.split} x {self.n_batches}" if self.n_batches > 1 else
            f"batch            {self.batch_size} conformations per task",
            f"tasks            {self.n_tasks}",
            f"memory per task  ~{self.memory_per_task_bytes / 2**20:.0f} MiB",
        ]
        return "\n".join(lines)

    __str__ = summary


@dataclasses.dataclass(frozen=True)
class RenderReport:
    """What `run_plan` did: each task's result (ranges, timings, as the task returns it),
    and where the client's wall time went (`stages_s`, s: `prepare`: lease, store
    creation or check, listing what is done; `tasks`: the graph, submitted until gathered)."""

    plan: RenderPlan
    task_results: list
    stages_s: dict = dataclasses.field(default_factory=dict)

    @property
    def rendered(self) -> list[int]:
        """The conformations rendered (whole-conformation tasks)."""
        return sorted(i for r in self.task_results if "start" in r
                      for i in range(r["start"], r["stop"]))


def default_batch_size(n_todo: int, n_workers: int, volume_bytes: int,
                       device_encoded: bool = False, memory_bytes: int | None = None) -> int:
    """Conformations per task: enough tasks to balance (~4 per worker), and at most ~256
    MiB of volumes where the host compresses them, or, where workers compress on their
    devices (`device_encoded`), up to 512 conformations and ~4 GiB: nvCOMP's time per
    call has a floor that large batches amortise, and workers run a task in two or more
    batches (one is stored while the next renders; `tasks.render_conformations`), each
    fitting their device memory (`tasks.fitting_batch`). Where the workers' host memory
    per task slot (`memory_bytes`) is known, a task's volumes take at most half of it (the
    memory check counts them raw). Tasks are then evened out to a multiple of `n_workers`,
    so no worker runs one task more than the others at the end."""
    by_balance = max(1, n_todo // max(1, 4 * n_workers))
    if device_encoded:
        most = int(max(1, min(512, by_balance, (4 * 2**30) // volume_bytes)))
    else:
        most = int(max(1, min(64, by_balance, (256 * 2**20) // volume_bytes)))
    if memory_bytes:
        most = max(1, min(most, int(memory_bytes) // 2 // volume_bytes))
    n_tasks = -(-n_todo // most)
    if n_tasks > n_workers:
        n_tasks = -(-n_tasks // n_workers) * n_workers
    return int(max(1, -(-n_todo // max(1, n_tasks))))


# Window voxels (atoms x k^3) per volume above which a volume is split into z-slabs by
# default: below it one task renders a whole volume in well under a second on a GPU.
_SLAB_WORK = 2**30
# Raw bytes of one default z-slab: the volume's work spread over every worker process of
# a GPU host, each slab's halo (k - 1 planes of atoms) small beside its planes.
_SLAB_BYTES = 32 * 2**20


def default_n_batches(n_atoms: int, window: int, shape, renderer: str, split: str) -> int:
    """z-slabs per volume when the caller gives none: 1 unless a volume's atoms reach more
    than `_SLAB_WORK` window voxels (millions of atoms), then slabs of about `_SLAB_BYTES`
    (e.g. 16 at 512^3), so that the processes of a host share each volume and no task
    holds more than a slab. The count depends only on the atoms and grid, not on the
    cluster: a store resumed on other workers keeps its layout."""
    if split != "slabs" or not tasks.RENDERERS[renderer].splits_atoms:
        return 1
    if n_atoms * window**3 <= _SLAB_WORK:
        return 1
    volume_bytes = int(np.prod(shape)) * 4
    return int(min(shape[0], max(2, -(-volume_bytes // _SLAB_BYTES))))


def _check_arguments(source, shape, voxel_size, dtype, renderer, split, n_batches, batch_size):
    """One-line errors for arguments that cannot work, before anything is read or run."""
    if not (math.isfinite(voxel_size) and voxel_size > 0):
        raise ValueError(f"voxel_size: must be a finite number > 0 (A); got {voxel_size}")
    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype: float32 or float16; got {dtype!r}")
    if renderer not in tasks.RENDERERS:
        raise ValueError(f"renderer: one of {list(tasks.RENDERERS)}; got {renderer!r}")
    kind = tasks.RENDERERS[renderer]
    if kind.needs_tabulated_atoms and source.mixture() is not None:
        raise ValueError(f"renderer '{renderer}' renders tabulated atoms: not a source "
                         "with its own mixture")
    if split not in ("slabs", "atoms"):
        raise ValueError(f"split: 'slabs' or 'atoms'; got {split!r}")
    if n_batches is not None:  # None: chosen from the atoms and grid (`default_n_batches`)
        if not kind.splits_atoms and n_batches > 1:
            raise ValueError(f"renderer '{renderer}' renders whole volumes: no n_batches")
        if n_batches < 1:
            raise ValueError(f"n_batches: must be >= 1; got {n_batches}")
        if n_batches > 1 and split == "slabs" and n_batches > shape[0]:
            raise ValueError(f"n_batches: {n_batches} slabs exceed the {shape[0]} z-planes")
        if n_batches > 1 and split == "atoms" and n_batches > source.n_atoms:
            raise ValueError(f"n_batches: {n_batches} atom groups exceed the "
                             f"{source.n_atoms} atoms")
    if batch_size is not None and int(batch_size) < 1:
        raise ValueError(f"batch_size: must be >= 1; got {batch_size}")


def _store_records(source, spec, layout, plan) -> tuple[dict, dict]:
    """The parameters a resumed store must match, and its descriptive attributes."""
    inputs = {path: file_sha256(path) for path in source.input_files()}
    renderer = tasks.RENDERERS[spec.renderer]
    parameters = {
        "shape": list(spec.shape), "voxel_size": spec.voxel_size, "dtype": layout.dtype,
        "n_conformations": layout.n_conformations, "z_chunk": layout.z_chunk,
        "renderer": renderer.store_parameters(spec.truncation),
        "scattering_table": "peng1996" if source.mixture() is None else "source",
        "extra_b_factor": spec.extra_b_factor, "centre": list(spec.centre),
        "source": source.description(), "inputs_sha256": inputs,
    }
    attributes = {
        "title": "cryoensemble potential stack",
        "voxel_size_angstrom": spec.voxel_size,
        "renderer": renderer.description,
        "renderer_options": f"truncation={spec.truncation}, support radii (A) by window: "
        + ", ".join(f"{n} atoms {r:.3f} (k={w})" for n, r, w in plan.groups),
        "scattering_table": "Peng et al. (1996), from gemmi Element.c4322",
        "input_files": list(inputs),
        "grid_convention": "arrays [z, y, x]; voxel i at (i - n // 2) * voxel_size; positions "
        "minus centre",
    }
    return parameters, attributes


def _support_groups(source, spec) -> "SupportPlan":
    """The groups `((n_atoms, radius, k), ...)` of the workers' `tasks.support_plan`, as a
    plan without its permutation: each element's window from its mixture row (float32,
    as the workers' rows), each group's atoms counted by element (the client needs the
    windows, not millions of atoms put in order)."""
    from ..constants import b_factor_to_variance_numpy, peng_parameters_numpy
    from ..simulator import SupportPlan

    if source.mixture() is not None:  # a mixture per atom: the plan itself
        return tasks.support_plan(source, spec).support
    elements, counts = _element_counts(np.asarray(source.atomic_numbers).reshape(-1))
    a, b = peng_parameters_numpy(elements)  # names bad elements
    v = b_factor_to_variance_numpy(b + float(spec.extra_b_factor))
    by_row = SupportPlan.from_mixture(np.asarray(a, np.float32), np.asarray(v, np.float32),
                                      spec.voxel_size, spec.truncation)
    rows = np.arange(len(elements)) if by_row.order is None else by_row.order
    counts, ends = counts[rows], np.cumsum([n for n, _, _ in by_row.groups])
    return SupportPlan(None, [(int(counts[end - n : end].sum()), radius, k)
                              for (n, radius, k), end in zip(by_row.groups, ends)])


def _element_counts(numbers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct atomic numbers and how many atoms have each (counted, not sorted,
    where they are small non-negative integers)."""
    if (numbers.size and np.issubdtype(numbers.dtype, np.integer)
            and 0 <= numbers.min() and numbers.max() < 4096):
        counts = np.bincount(numbers)
        elements = np.flatnonzero(counts)
        return elements.astype(numbers.dtype), counts[elements]
    return np.unique(numbers, return_counts=True)


def _runs(todo: np.ndarray, batch_size: int, n_batches: int) -> tuple:
    """`(start, stop)` of each task, in the order they run."""
    if n_batches == 1:
        return tuple(_contiguous_batches(todo, batch_size))
    return tuple((int(i), int(i) + 1) for i in todo)


def plan_render(
    source: AbstractEnsembleSource,
    *,
    shape,
    voxel_size: float,
    store,
    storage_options: dict | None = None,
    n_workers: int = 1,
    batch_size: int | None = None,
    n_batches: int | None = None,
    split: Literal["slabs", "atoms"] = "slabs",
    dtype: Literal["float32", "float16"] = "float32",
    extra_b_factor: float = 0.0,
    center=True,
    truncation: float = 1e-6,
    renderer: str = "gaussian",
    outside: Literal["error", "warn", "clip"] = "warn",
    outside_tolerance: float = 0.01,
) -> RenderPlan:
    """Validate the arguments and plan the render (see `render_ensemble` for them);
    `n_workers` is the number of tasks that run at once, for sizing batches."""
    shape = as_grid_shape(shape)
    voxel_size = float(voxel_size)
    n_batches = None if n_batches is None else int(n_batches)
    _check_arguments(source, shape, voxel_size, dtype, renderer, split, n_batches, batch_size)
    if not math.isfinite(float(extra_b_factor)):
        raise ValueError(f"extra_b_factor: must be finite (A^2); got {extra_b_factor}")
    source.check()  # what a task would trip on, read here
    # The store owns paths and URLs: the location is opaque here. Checked (scheme, driver,
    # endpoint; not someone else's folder) before anything is read or rendered.
    location = store_module.as_location(store, storage_options)
    location.check()
    store_module.check_target(location)
    # The first conformation, read once: the centre and the box check both need it.
    first = source.read(0, 1)[0] if center is True or outside != "clip" else None
    spec = tasks.RenderSpec(shape, voxel_size, float(truncation), 1,
                            _checks.centre_of(source, center, first), float(extra_b_factor),
                            location, renderer)
    if float(extra_b_factor) < 0 and not np.all(tasks.mixture(source, extra_b_factor)[1] > 0):
        raise ValueError(f"extra_b_factor: {extra_b_factor} A^2 makes some atoms' gaussians "
                         "negative (Peng's b are as small as ~0.1 A^2); use a value >= 0")
    support = _support_groups(source, spec)  # validates elements; workers derive the same
    if n_batches is None:
        n_batches = default_n_batches(source.n_atoms, support.k_max, shape, renderer, split)
    _checks.check_atoms_in_box(source, spec, lambda: tasks.atom_amplitudes(source),
                               outside, outside_tolerance, tasks.RENDERERS[renderer].periodic,
                               first=first)
    del first
    n = len(source)
    z_slabs = n_batches if (n_batches > 1 and split == "slabs") else 1
    layout = store_module.StoreLayout(
        n, shape, dtype, store_module.choose_z_chunk(shape, dtype, z_slabs)
    )
    parameters, attributes = _store_records(source, spec, layout, support)
    done = (
        store_module.done_conformations(location, layout)
        if store_module.read_parameters(location) == store_module.canonical_parameters(parameters)
        else np.zeros(n, bool)
    )
    todo = tuple(int(i) for i in np.flatnonzero(~done))
    plan = RenderPlan(source, spec, layout, split, n_batches, todo, batch_size is None,
                      parameters, attributes, int(done.sum()), support.radius, support.k_max)
    if batch_size is None:
        return plan.for_workers(n_workers)
    return dataclasses.replace(plan, spec=dataclasses.replace(
        spec, batch_size=int(batch_size) if n_batches == 1 else 1))


def run_plan(plan: RenderPlan, client, *, overwrite: bool = False,
             progress: bool = False) -> RenderReport:
    """Take the store's writer lease, prepare the store, build the plan's graph and run it
    on `client` (a second render of the same store is refused while this one runs)."""
    start = time.perf_counter()
    with store_module.acquire_lease(plan.store, config.lease_ttl_seconds()):
        store_module.prepare_store(plan.store, plan.layout, plan.parameters,
                                   plan.source.labels(), plan.attributes, overwrite)
        plan = dataclasses.replace(plan, spec=dataclasses.replace(
            plan.spec, generation=store_module.store_generation(plan.store)))
        # Decided again under the lease: another run may have finished some meanwhile,
        # and a replaced store starts empty.
        todo = np.flatnonzero(~store_module.done_conformations(plan.store, plan.layout))
        runs = _runs(todo, plan.batch_size, plan.n_batches)
        stages = {"prepare": time.perf_counter() - start}
        if not runs:
            return RenderReport(plan, [], stages)
        with reporting_worker_losses(client):
            futures = client.compute(_graph(plan, runs))
            if progress:
                from distributed import progress as show_progress

                print(f"dashboard: {client.dashboard_link}", file=sys.stderr, flush=True)
                with contextlib.redirect_stdout(sys.stderr):  # stdout stays for results
                    show_progress(futures)
                print(file=sys.stderr)
            results = client.gather(futures)
        stages["tasks"] = time.perf_counter() - start - stages["prepare"]
        return RenderReport(plan, results, stages)


def _worker_memory(client) -> int:
    """The smallest memory limit among the client's workers (bytes per task slot)."""
    workers = client.scheduler_info()["workers"].values()
    limits = [w.get("memory_limit") or 0 for w in workers]
    limits = [m // max(1, w["nthreads"]) for m, w in zip(limits, workers) if m]
    return min(limits) if limits else 2**62


def workers_encode_on_device(client) -> bool:
    """Whether every worker of `client` compresses its batches on its GPU."""
    answers = client.run(tasks.encodes_on_device)
    return bool(answers) and all(answers.values())


def _ask_workers_encode_on_device(client):
    """Start asking `client`'s workers `workers_encode_on_device` now, on a thread of its
    own, and return what waits for the answer. A cold worker starts JAX to answer (seconds
    on a GPU), which then overlaps the client's planning instead of following it."""
    pool = tasks._one_thread("cryoensemble-ask")
    answer = pool.submit(workers_encode_on_device, client)
    pool.shutdown(wait=False)
    return answer.result


def _task_slots(client) -> int:
    return sum(w["nthreads"] for w in client.scheduler_info()["workers"].values())


def render_ensemble(
    source: AbstractEnsembleSource,
    *,
    shape,
    voxel_size: float,
    store=None,
    storage_options: dict | None = None,
    client=None,
    scheduler_address: str | None = None,
    scheduler_file: str | None = None,
    security=None,
    gpus: int | None = None,
    n_workers: int | None = None,
    batch_size: int | None = None,
    n_batches: int | None = None,
    split: Literal["slabs", "atoms"] = "slabs",
    dtype: Literal["float32", "float16"] = "float32",
    extra_b_factor: float = 0.0,
    center=True,
    truncation: float = 1e-6,
    renderer: str = "gaussian",
    outside: Literal["error", "warn", "clip"] = "warn",
    outside_tolerance: float = 0.01,
    overwrite: bool = False,
    dry_run: bool = False,
    progress: bool = False,
):
    """Render every conformation of `source` into a zarr store; open it lazily.

    Plan (`plan_render`) -> prepare the store, build the graph and run it (`run_plan`,
    which returns what each task did) -> open the store.

    **Arguments:**

    - `source`: an ensemble source (`cryoensemble.sources`).
    - `shape`: N or (NZ, NY, NX); `voxel_size` in A.
    - `store`: a path or any URL zarr opens through fsspec (`s3://bucket/x.zarr`,
      `gs://...`, `file://...`), or a `cryoensemble.store.StoreLocation`; with
      `storage_options` for its filesystem (credentials may also come from the usual
      environment, e.g. AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID). An existing store made with
      the same parameters is resumed (only missing conformations are rendered); one made
      with others is refused, naming the differences, unless `overwrite`. One render
      writes a store at a time (a lease in the store; a second is refused).
    - `client`: a `distributed.Client`; else `scheduler_address` or `scheduler_file`
      (with `security`, a `distributed.Security` for TLS), else an embedded
      `LocalCluster` bound to 127.0.0.1 (`n_workers` processes, or `gpus` GPU workers).
    - `batch_size`: conformations per task (default: sized from the ensemble and workers).
    - `n_batches`: split each volume's atoms into this many parts, by z-`slabs` (each
      task renders the atoms touching its slab and writes the slab) or by atom groups
      summed in a tree (`split="atoms"`). Default: whole volumes, or z-slabs for atom
      sets of millions of atoms (`default_n_batches`).
    - `dtype`: stored precision (rendering is float32).
    - `extra_b_factor`: A^2 added to every atom's b. `center`: `True` subtracts the
      centre of the bulk of the first conformation's atoms from all (motion kept; the
      mean position unless stray atoms lie far away, `cryoensemble.io.bulk_centre`),
      `None` keeps the file's frame, or an (x, y, z) in A.
    - `outside`: atoms outside the box (in up to 16 conformations, evenly spaced, the
      first and last included): `"error"` refuses them, `"warn"` warns (refusing more
      than `outside_tolerance` of the scattering), `"clip"` renders what is inside (the
      periodic `"fft"` renderer wraps them around instead).
    - `truncation`: relative L2 bound of each atom's dropped tails (see
      `GaussianMixtureRenderFn`).
    - `renderer`: a key of `RENDERERS`: `"gaussian"` (exact voxel averages) or `"fft"`
      (`FFTAtomRenderFn`: band-limited, one NUFFT per element; see its docs for when
      each fits).
    - `dry_run`: plan and check only (the store path, GPUs, memory per task against this
      machine's workers); returns the `RenderPlan`.
    - `progress`: show a progress bar.

    **Returns:** the store as an `xarray.Dataset` (lazy), or the plan if `dry_run`.
    """
    if store is None:
        if dry_run or overwrite or storage_options:
            raise ValueError("store=None renders lazily: no dry_run, overwrite or "
                             "storage_options")
        return lazy_ensemble(source, shape=shape, voxel_size=voxel_size, batch_size=batch_size,
                             n_batches=n_batches, dtype=dtype, extra_b_factor=extra_b_factor,
                             center=center, truncation=truncation, renderer=renderer)
    arguments = dict(shape=shape, voxel_size=voxel_size, store=store,
                     storage_options=storage_options, batch_size=batch_size,
                     n_batches=n_batches, split=split, dtype=dtype,
                     extra_b_factor=extra_b_factor, center=center, truncation=truncation,
                     renderer=renderer, outside=outside, outside_tolerance=outside_tolerance)
    # A given client's workers are asked now, so that their start-up overlaps planning.
    answer = None if client is None or dry_run else _ask_workers_encode_on_device(client)
    plan = plan_render(source, n_workers=n_workers or os.cpu_count() or 1, **arguments)
    _checks.check_store_path(plan.store, plan.parameters, overwrite)
    _checks.check_scheduler_file(scheduler_file)
    embedded = client is None and not scheduler_address and not scheduler_file
    if embedded:
        _checks.check_gpus(gpus)
        workers = n_workers or os.cpu_count() or 1
        _checks.check_memory(plan, _checks.worker_memory_bytes(workers), "this machine")
    if dry_run:
        return plan
    with connect(client, scheduler_address, gpus, n_workers, scheduler_file=scheduler_file,
                 security=security) as dask_client:
        encoded = answer() if answer is not None else workers_encode_on_device(dask_client)
        plan = plan.for_workers(_task_slots(dask_client), encoded, _worker_memory(dask_client))
        if not embedded:
            _checks.check_memory(plan, _worker_memory(dask_client), "the cluster")
        run_plan(plan, dask_client, overwrite=overwrite, progress=progress)
    return store_module.open_store(plan.store)


def lazy_ensemble(
    source: AbstractEnsembleSource,
    *,
    shape,
    voxel_size: float,
    batch_size: int | None = None,
    n_batches: int | None = None,
    dtype: Literal["float32", "float16"] = "float32",
    extra_b_factor: float = 0.0,
    center=True,
    truncation: float = 1e-6,
    renderer: str = "gaussian",
):
    """The ensemble as the Dataset a store would hold, with `potential` a dask array
    whose chunks (`batch_size` conformations each; default ~4 per core) render when
    computed. For users who compose it into their own graphs or reduce it without
    storing (`render_ensemble(..., store=None)`); arguments as for `render_ensemble`.
    """
    import dask
    import dask.array as da

    shape = as_grid_shape(shape)
    voxel_size = float(voxel_size)
    n_batches = 1 if n_batches is None else int(n_batches)  # whole volumes by default
    _check_arguments(source, shape, voxel_size, dtype, renderer, "slabs", n_batches,
                     batch_size)
    if n_batches != 1:
        raise ValueError("n_batches: a lazy render (store=None) renders whole volumes; "
                         "give a store to split atoms")
    n = len(source)
    volume_bytes = int(np.prod(shape)) * 4
    size = int(batch_size) if batch_size is not None else default_batch_size(
        n, os.cpu_count() or 1, volume_bytes)
    spec = tasks.RenderSpec(shape, voxel_size, float(truncation), size,
                            _checks.centre_of(source, center), float(extra_b_factor), None, renderer)
    support = _support_groups(source, spec)  # validates elements before any graph runs
    layout = store_module.StoreLayout(n, shape, dtype, shape[0])
    parameters, attributes = _store_records(source, spec, layout, support)
    shared = dask.delayed(source, pure=True, traverse=False)
    blocks = [
        da.from_delayed(
            dask.delayed(_render_block, pure=True)(shared, spec, a, b, dtype),
            shape=(b - a, *shape), dtype=dtype)
        for a, b in _contiguous_batches(np.arange(n), size)
    ]
    potential = da.concatenate(blocks, axis=0)
    created = datetime.datetime.now(datetime.timezone.utc).isoformat()
    # The parameters as a store made with the same arguments records them.
    parameters = store_module.canonical_parameters(parameters)
    dataset = store_module.potential_dataset(layout, parameters, source.labels(), attributes,
                                             created, potential=potential,
                                             rendered=np.ones(n, np.uint8))
    dataset[store_module.RENDERED].attrs["long_name"] = "1: every conformation renders on compute"
    return dataset


def _render_block(source, spec: tasks.RenderSpec, start: int, stop: int, dtype: str) -> np.ndarray:
    """Volumes of conformations `[start, stop)` as a host array (a lazy chunk)."""
    positions = tasks._pad_batch(tasks._read(source, spec, start, stop), spec.batch_size)
    volumes = tasks._render_batch(source, spec, positions)
    return np.asarray(volumes)[: stop - start].astype(dtype, copy=False)


def _contiguous_batches(indices: np.ndarray, batch_size: int) -> list[tuple[int, int]]:
    """Split sorted indices into [start, stop) runs of at most batch_size."""
    runs = []
    if len(indices) == 0:
        return runs
    breaks = np.flatnonzero(np.diff(indices) != 1) + 1
    for group in np.split(indices, breaks):
        for s in range(0, len(group), batch_size):
            chunk = group[s : s + batch_size]
            runs.append((int(chunk[0]), int(chunk[-1]) + 1))
    return runs


# The most bytes of pickled source copies a graph embeds (one per task), beyond which the
# tasks share one key instead.
_EMBEDDED_SOURCE_BYTES = 64 * 2**20


def _source_in_graph(source, n_tasks: int):
    """The source as the graph's tasks get it: a copy inside each task where the copies are
    small, else one key that every task depends on. Tasks without a dependency are spread
    over the workers by their load when submitted; a shared key draws each task to the
    worker that holds it (where there are at most twice as many tasks as task slots, dask
    does not queue them), and work stealing moves only some away."""
    import cloudpickle  # as dask sends it: sources may be local classes
    import dask

    if len(cloudpickle.dumps(source)) * n_tasks <= _EMBEDDED_SOURCE_BYTES:
        return source
    return dask.delayed(source, pure=True, traverse=False)


def _graph(plan: RenderPlan, runs) -> list:
    """Dask delayed tasks, one list entry per final task."""
    import dask

    source, spec, nz = plan.source, plan.spec, plan.spec.shape[0]
    n_tasks = len(runs) * (plan.n_batches if plan.n_batches > 1 else 1)
    shared = _source_in_graph(source, n_tasks)
    # Task names carry this run's own token: a scheduler still holding a finished task of
    # the same name (an earlier render on the same client) would return its result and
    # never run the task for this store.
    run = uuid.uuid4().hex[:8]

    if plan.n_batches == 1:
        graph = []
        # In the order of the conformations (dask would otherwise run independent tasks by
        # name, from the last): a stopped render leaves its first conformations done.
        for order, (a, b) in enumerate(runs):
            with dask.annotate(priority=len(runs) - order):
                graph.append(dask.delayed(tasks.render_conformations, pure=False)(
                    shared, spec, a, b, dask_key_name=f"render-{run}-{a}-{b}"))
        return graph
    graph = []
    for index, _ in runs:
        if plan.split == "slabs":
            slabs = [
                dask.delayed(tasks.render_slab, pure=False)(
                    shared, spec, index, z0, min(nz, z0 + plan.layout.z_chunk),
                    plan.layout.z_chunk, dask_key_name=f"slab-{run}-{index}-{z0}")
                for z0 in range(0, nz, plan.layout.z_chunk)
            ]
            graph.append(dask.delayed(tasks.mark_done)(spec, index, *slabs,
                                                      dask_key_name=f"done-{run}-{index}"))
        else:
            bounds = np.linspace(0, source.n_atoms, plan.n_batches + 1).astype(int)
            parts = [
                dask.delayed(tasks.render_atom_group, pure=False)(
                    shared, spec, index, int(a0), int(a1), dask_key_name=f"atoms-{run}-{index}-{a0}")
                for a0, a1 in zip(bounds[:-1], bounds[1:])
            ]
            level = 0
            while len(parts) > 1:  # tree sum
                parts = [
                    dask.delayed(tasks.add_volumes)(parts[i], parts[i + 1],
                                                    dask_key_name=f"sum-{run}-{index}-{level}-{i}")
                    if i + 1 < len(parts) else parts[i]
                    for i in range(0, len(parts), 2)
                ]
                level += 1
            graph.append(dask.delayed(tasks.write_conformation)(spec, index, parts[0],
                                                                dask_key_name=f"write-{run}-{index}"))
    return graph
