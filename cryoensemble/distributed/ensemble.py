"""render_ensemble: an ensemble source to a labeled zarr stack, through a Dask graph.

The client plans and sizes; workers read, render and write. Each task owns whole chunks
(conformations, or z-slabs of one conformation), so no two tasks write the same chunk and
no volume passes through the client. Huge atom sets are split by z-slabs (each task the
atoms that touch its slab; bit for bit the unsplit volume on CPU) or by atom groups summed
in a tree.
"""

import dataclasses
import math
import os
import sys
from typing import Any, Literal

import numpy as np

from .. import store as store_module
from ..sources import AbstractEnsembleSource, file_sha256
from . import tasks
from .cluster import connect


@dataclasses.dataclass
class RenderPlan:
    """What a render will do, for `--dry-run` and for the caller."""

    store: str
    n_conformations: int
    n_done: int
    n_tasks: int
    batch_size: int
    split: str
    n_batches: int
    support_radius: float
    window: int
    memory_per_task_bytes: int
    layout: store_module.StoreLayout

    def summary(self) -> str:
        todo = self.n_conformations - self.n_done
        lines = [
            f"store            {self.store}",
            f"conformations    {self.n_conformations} ({self.n_done} already done, {todo} to render)",
            f"grid             {'x'.join(map(str, self.layout.shape))} {self.layout.dtype}, "
            f"chunks {self.layout.chunks}",
            f"support          up to {self.support_radius:.2f} A ({self.window}^3 voxels per atom)",
            f"atom split       {self.split} x {self.n_batches}" if self.n_batches > 1 else
            f"batch            {self.batch_size} conformations per task",
            f"tasks            {self.n_tasks}",
            f"memory per task  ~{self.memory_per_task_bytes / 2**20:.0f} MiB",
        ]
        return "\n".join(lines)


def _centre(source: AbstractEnsembleSource, center) -> tuple[float, float, float]:
    if center is True:
        return tuple(float(c) for c in source.read(0, 1)[0].astype(np.float64).mean(axis=0))
    if center is None or center is False:
        return (0.0, 0.0, 0.0)
    centre = np.asarray(center, dtype=np.float64)
    if centre.shape != (3,):
        raise ValueError(f"center: expected True, None or (x, y, z) in A; got {center!r}")
    return tuple(float(c) for c in centre)


def _shape(shape) -> tuple[int, int, int]:
    shape = (shape,) * 3 if np.ndim(shape) == 0 else tuple(shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape: expected N or (NZ, NY, NX); got {shape}")
    return tuple(int(s) for s in shape)


def default_batch_size(n_todo: int, n_workers: int, volume_bytes: int) -> int:
    """Conformations per task: enough tasks to balance (~4 per worker), each holding at
    most ~256 MiB of volumes and at most 64 of them."""
    by_balance = max(1, n_todo // max(1, 4 * n_workers))
    by_memory = max(1, (256 * 2**20) // volume_bytes)
    return int(min(64, by_balance, by_memory))


def render_ensemble(
    source: AbstractEnsembleSource,
    *,
    shape,
    voxel_size: float,
    store,
    storage_options: dict | None = None,
    client=None,
    scheduler_address: str | None = None,
    gpus: int | None = None,
    n_workers: int | None = None,
    batch_size: int | None = None,
    n_batches: int = 1,
    split: Literal["slabs", "atoms"] = "slabs",
    dtype: Literal["float32", "float16"] = "float32",
    extra_b_factor: float = 0.0,
    center=True,
    truncation: float = 1e-6,
    renderer: Literal["gaussian", "fft"] = "gaussian",
    overwrite: bool = False,
    dry_run: bool = False,
    progress: bool = False,
):
    """Render every conformation of `source` into a zarr store; open it lazily.

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
    - `client`: a `distributed.Client`; else `scheduler_address`, else an embedded
      `LocalCluster` (`n_workers` processes, or `gpus` dask-cuda workers).
    - `batch_size`: conformations per task (default: sized from the ensemble and workers).
    - `n_batches`: split each volume's atoms into this many parts, by z-`slabs` (each
      task renders the atoms touching its slab and writes the slab) or by atom groups
      summed in a tree (`split="atoms"`).
    - `dtype`: stored precision (rendering is float32).
    - `extra_b_factor`: A^2 added to every atom's b. `center`: `True` subtracts the mean
      position of the first conformation from all (motion kept), `None` keeps the file's
      frame, or an (x, y, z) in A.
    - `truncation`: relative L2 bound of each atom's dropped tails (see
      `GaussianMixtureRenderFn`).
    - `renderer`: `"gaussian"` (exact voxel averages) or `"fft"` (`FFTAtomRenderFn`:
      band-limited, one NUFFT per element; see its docs for when each fits).
    - `dry_run`: plan only; returns the `RenderPlan`.
    - `progress`: show a progress bar.

    **Returns:** the store as an `xarray.Dataset` (lazy), or the plan if `dry_run`.
    """
    shape = _shape(shape)
    voxel_size = float(voxel_size)
    if not voxel_size > 0:
        raise ValueError(f"voxel_size: must be > 0 (A); got {voxel_size}")
    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype: float32 or float16; got {dtype!r}")
    if renderer not in ("gaussian", "fft"):
        raise ValueError(f"renderer: 'gaussian' or 'fft'; got {renderer!r}")
    if renderer == "fft" and (n_batches > 1 or hasattr(source, "mixture")):
        raise ValueError("renderer 'fft' renders whole volumes of tabulated atoms: "
                         "no n_batches, no parametrization sources")
    if split not in ("slabs", "atoms"):
        raise ValueError(f"split: 'slabs' or 'atoms'; got {split!r}")
    if int(n_batches) < 1:
        raise ValueError(f"n_batches: must be >= 1; got {n_batches}")
    if n_batches > 1 and split == "slabs" and n_batches > shape[0]:
        raise ValueError(f"n_batches: {n_batches} slabs exceed the {shape[0]} z-planes")
    if n_batches > 1 and split == "atoms" and n_batches > source.n_atoms:
        raise ValueError(f"n_batches: {n_batches} atom groups exceed the {source.n_atoms} atoms")
    location = store_module.as_location(store, storage_options)
    location.check()
    store_module.check_target(location)
    n = len(source)

    probe = tasks.RenderSpec(shape, voxel_size, float(truncation), 1, (0.0, 0.0, 0.0),
                             float(extra_b_factor), location, renderer)
    plan = tasks.support_plan(source, probe)  # validates elements; workers derive the same
    radius, k = plan.radius, plan.k_max
    centre = _centre(source, center)
    z_slabs = n_batches if (n_batches > 1 and split == "slabs") else 1
    layout = store_module.StoreLayout(
        n, shape, dtype, store_module.choose_z_chunk(shape, dtype, z_slabs)
    )

    inputs = {path: file_sha256(path) for path in source.input_files()}
    parameters = {
        "shape": list(shape), "voxel_size": voxel_size, "dtype": dtype,
        "n_conformations": n, "z_chunk": layout.z_chunk,
        "renderer": ({"name": "gaussian", "truncation": truncation} if renderer == "gaussian"
                     else {"name": "fft", "eps": 1e-6, "sampling_mode": "average"}),
        "scattering_table": "peng1996" if not hasattr(source, "mixture") else "source",
        "extra_b_factor": float(extra_b_factor), "centre": list(centre),
        "source": source.description(), "inputs_sha256": inputs,
    }
    attributes = {
        "title": "cryoensemble potential stack",
        "units": "A^-2 (potential), A (coordinates)",
        "voxel_size_angstrom": voxel_size,
        "renderer": ("GaussianMixtureRenderFn (exact voxel averages)" if renderer == "gaussian"
                     else "FFTAtomRenderFn (band-limited voxel averages, Peng)"),
        "renderer_options": f"truncation={truncation}, support radii (A) by window: "
        + ", ".join(f"{n} atoms {r:.3f} (k={w})" for n, r, w in plan.groups),
        "scattering_table": "Peng et al. (1996), from gemmi Element.c4322",
        "input_files": list(inputs),
        "conventions": "arrays [z, y, x]; voxel i at (i - n // 2) * voxel_size; positions "
        "minus centre",
    }

    volume_bytes = int(np.prod(shape)) * 4
    done = (
        store_module.done_conformations(location, layout)
        if store_module.read_parameters(location) == store_module.canonical_parameters(parameters)
        else np.zeros(n, bool)
    )
    todo = np.flatnonzero(~done)

    with connect(client, scheduler_address, gpus, n_workers) if not dry_run else _null() as dask_client:
        workers = (sum(w["nthreads"] for w in dask_client.scheduler_info()["workers"].values())
                   if dask_client else (n_workers or os.cpu_count()))
        if batch_size is None:
            batch_size = default_batch_size(len(todo), workers, volume_bytes)
        if int(batch_size) < 1:
            raise ValueError(f"batch_size: must be >= 1; got {batch_size}")
        batch_size = int(batch_size)
        spec = dataclasses.replace(
            probe, batch_size=batch_size if n_batches == 1 else 1, centre=centre
        )
        runs = _contiguous_batches(todo, batch_size) if n_batches == 1 else [(i, i + 1) for i in todo]
        n_tasks = len(runs) * (1 if n_batches == 1 else n_batches + 1)
        atoms_per_task = source.n_atoms / n_batches
        plan = RenderPlan(
            location.url, n, int(done.sum()), n_tasks, spec.batch_size, split, n_batches, radius, k,
            int(spec.batch_size * volume_bytes + atoms_per_task * k**3 * 4 * 1.5), layout,
        )
        if dry_run:
            return plan
        with store_module.acquire_lease(location):
            store_module.prepare_store(location, layout, parameters, source.labels(), attributes,
                                       overwrite)
            # Decided again under the lease: another run may have finished some meanwhile,
            # and a replaced store starts empty.
            todo = np.flatnonzero(~store_module.done_conformations(location, layout))
            runs = _contiguous_batches(todo, batch_size) if n_batches == 1 else [(i, i + 1) for i in todo]
            results = []
            if len(runs):
                graph = _graph(source, spec, runs, n_batches, split, layout)
                futures = dask_client.compute(graph)
                if progress:
                    from distributed import progress as show_progress

                    print(f"dashboard: {dask_client.dashboard_link}", file=sys.stderr, flush=True)
                    show_progress(futures)
                    print(file=sys.stderr)
                results = dask_client.gather(futures)
        # What each task did (ranges, timings): for tests and benchmarks.
        render_ensemble.last_task_results = results
    return store_module.open_store(location)


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *args):
        return False


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


def _graph(source, spec, runs, n_batches, split, layout) -> list:
    """Dask delayed tasks, one list entry per final task."""
    import dask

    # One copy of the source in the graph, shared by every task that reads it.
    shared = dask.delayed(source, pure=True, traverse=False)

    if n_batches == 1:
        return [
            dask.delayed(tasks.render_conformations, pure=False)(shared, spec, a, b,
                                                                 dask_key_name=f"render-{a}-{b}")
            for a, b in runs
        ]
    graph = []
    nz = spec.shape[0]
    for index, _ in runs:
        if split == "slabs":
            slabs = [
                dask.delayed(tasks.render_slab, pure=False)(
                    shared, spec, index, z0, min(nz, z0 + layout.z_chunk),
                    dask_key_name=f"slab-{index}-{z0}")
                for z0 in range(0, nz, layout.z_chunk)
            ]
            graph.append(dask.delayed(tasks.mark_done)(spec, index, *slabs,
                                                      dask_key_name=f"done-{index}"))
        else:
            bounds = np.linspace(0, source.n_atoms, n_batches + 1).astype(int)
            parts = [
                dask.delayed(tasks.render_atom_group, pure=False)(
                    shared, spec, index, int(a0), int(a1), dask_key_name=f"atoms-{index}-{a0}")
                for a0, a1 in zip(bounds[:-1], bounds[1:])
            ]
            level = 0
            while len(parts) > 1:  # tree sum
                parts = [
                    dask.delayed(tasks.add_volumes)(parts[i], parts[i + 1],
                                                    dask_key_name=f"sum-{index}-{level}-{i}")
                    if i + 1 < len(parts) else parts[i]
                    for i in range(0, len(parts), 2)
                ]
                level += 1
            graph.append(dask.delayed(tasks.write_conformation)(spec, index, parts[0],
                                                                dask_key_name=f"write-{index}"))
    return graph
