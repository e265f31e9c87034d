"""A huge atom set through `render_ensemble`'s defaults: time per stage, bytes, memory.

The solvated AdK box (47,681 records; TIP4P virtual sites dropped, so 36,597 atoms per
image) is tiled along its CRYST1 lattice vectors (default 5 x 6 x 7 = 210 images, 7.7M
atoms; `--copies 6,7,7` gives 10.8M) and rendered at 512^3 the way a user calls it: the
cluster, the z-slab split and the batch come from the product's defaults unless an
option names them. Two renders on one cluster: `cold` (frame 0: the workers' first
render, compiles included) and `warm` (frame 1, the next volume). Slab renders equal the
unsplit render bit for bit on CPU (tests/test_ensemble.py); the error printed is that of a
32^3 block of the stored volume across a slab boundary at the grid's centre, against the
float64 exact voxel average of the atoms that reach it (`exact_reference`, as
`ensemble.py`).

The timeline says when each worker's slab tasks ran (from the render's start): the
critical path. Per stage (summed over slab tasks): wall seconds (`select` and `render` end when the
device is done), host-core user and system seconds; bytes to the device, to the host and
in the store; compiles, peak device memory and RSS per worker.

    python benchmarks/large_atoms.py                 # CPU workers
    python benchmarks/large_atoms.py --gpus 1        # GPU workers
    python benchmarks/large_atoms.py --gpus 2 --copies 6,7,7 --json out.json
"""

import argparse
import json
import os
import pathlib
import shutil
import tempfile
import time

import numpy as np


from _common import DATA, machine_line, relative_l2, tasks_by_worker
from ensemble import exact_reference


STAGES = ("plan", "read", "select", "render", "encode", "to_host", "write")


def lattice_vectors(pdb_path: pathlib.Path) -> np.ndarray:
    """Rows a, b, c (A) from the CRYST1 record."""
    import gemmi

    cell = gemmi.read_structure(str(pdb_path)).cell
    return np.asarray(cell.orth.mat, dtype=np.float64).T


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", default="5,6,7", help="images along a,b,c")
    parser.add_argument("--shape", type=int, default=512)
    parser.add_argument("--voxel-size", type=float, default=1.1)
    parser.add_argument("--n-batches", type=int, help="z-slabs (default: the product's)")
    parser.add_argument("--workers", type=int, help="CPU worker processes (default: the product's)")
    parser.add_argument("--gpus", type=int)
    parser.add_argument("--processes-per-gpu", type=int, help="default: the product's")
    parser.add_argument("--threads-per-process", type=int, help="default: the product's")
    parser.add_argument("--no-error", action="store_true", help="skip the float64 block check")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)

    from distributed import Client

    from cryoensemble.distributed import make_local_cluster, plan_render, run_plan
    from cryoensemble.distributed import ensemble, tasks
    from cryoensemble.sources import TiledSource, TrajectorySource

    copies = tuple(int(c) for c in args.copies.split(","))
    box = lattice_vectors(DATA / "adk_oplsaa.pdb")
    shape = (args.shape,) * 3
    workdir = tempfile.mkdtemp(prefix="cryoensemble-large-")
    print(machine_line(start_jax=False))
    start = time.perf_counter()
    cluster = make_local_cluster(n_workers=args.workers, gpus=args.gpus,
                                 processes_per_gpu=args.processes_per_gpu,
                                 threads_per_process=args.threads_per_process)
    try:
        with Client(cluster) as client:
            slots = sum(w["nthreads"] for w in client.scheduler_info()["workers"].values())
            print(f"# cluster: {len(client.scheduler_info()['workers'])} worker processes, "
                  f"{slots} task slots ({'GPU' if args.gpus else 'CPU'}), started in "
                  f"{time.perf_counter() - start:.1f} s")
            print(f"# {'x'.join(map(str, copies))} images of the unit, grid {args.shape}^3 at "
                  f"{args.voxel_size} A")
            output = {"machine": machine_line(start_jax=False), "copies": list(copies),
                      "shape": args.shape, "voxel_size": args.voxel_size, "gpus": args.gpus,
                      "workers": len(client.scheduler_info()["workers"]), "runs": {}}
            for name, frame in (("cold", 0), ("warm", 1)):
                unit = TrajectorySource(DATA / "adk_oplsaa.pdb", DATA / "adk_oplsaa.xtc",
                                        frames=f"{frame}:{frame + 1}")
                source = TiledSource(unit, copies, box)
                store = f"{workdir}/{name}.zarr"
                before = client.run(tasks.compile_count)
                t0, epoch = time.perf_counter(), time.time()
                # What render_ensemble(source, ..., client=client) does, keeping the tasks'
                # reports. Tiles beyond the grid are cropped on purpose: the grid is the
                # workload.
                # It asks the workers first, so that a cold worker's JAX start-up overlaps
                # the planning.
                answer = ensemble._ask_workers_encode_on_device(client)
                plan = plan_render(source, shape=shape, voxel_size=args.voxel_size, store=store,
                                   n_workers=slots, n_batches=args.n_batches, outside="clip")
                plan = plan.for_workers(slots, answer(), ensemble._worker_memory(client))
                t1 = time.perf_counter()
                results = run_plan(plan, client).task_results
                t2 = time.perf_counter()
                after = client.run(tasks.compile_count)
                print(_report(name, source, plan, results, t1 - t0, t2 - t0,
                              sum(after[w] - before.get(w, 0) for w in after),
                              _bytes_under(store)), flush=True)
                print(_timeline(results, epoch, t2 - t0), flush=True)
                error = None if args.no_error else _block_error(source, plan, store)
                if error is not None:
                    print(f"error of a 32^3 block across a slab boundary vs float64 exact: "
                          f"{error:.1e}", flush=True)
                slabs = [r for r in _flatten(results) if "z0" in r]
                output["runs"][name] = {
                    "seconds": t2 - t0, "plan_s": t1 - t0, "error": error,
                    "slabs": len(slabs), "n_atoms": source.n_atoms,
                    "stages": {st: {w: sum(r.get(f"{st}_{w}", 0.0) for r in slabs)
                                    for w in ("s", "user_s", "system_s")} for st in STAGES},
                    "peak_device_mib": max([r["peak_device_mib"] for r in slabs
                                            if r.get("peak_device_mib") is not None],
                                           default=None)}
                pools = [m for m in client.run(_device_pool).values() if m is not None]
                if pools:
                    print(f"device memory held by the workers' JAX pools: largest "
                          f"{max(pools) / 2**30:.2f} GiB, all {sum(pools) / 2**30:.2f} GiB",
                          flush=True)
            if args.json:
                with open(args.json, "w") as handle:
                    json.dump(output, handle, indent=2)
    finally:
        cluster.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _timeline(results, epoch: float, elapsed: float) -> str:
    """Per worker process: its slabs and when they ran, seconds from the render's start."""
    per_worker = tasks_by_worker(_flatten(results))
    if not per_worker:
        return ""
    lines = ["| worker | slabs | first start s | last end s | busy s | read s |",
             "| --- | --- | --- | --- | --- | --- |"]
    for pid, mine in sorted(per_worker.items()):
        lines.append(f"| {pid} | {len(mine)} | {min(r['started'] for r in mine) - epoch:.2f} | "
                     f"{max(r['finished'] for r in mine) - epoch:.2f} | "
                     f"{sum(r['finished'] - r['started'] for r in mine):.2f} | "
                     f"{sum(r.get('read_s', 0.0) for r in mine):.2f} |")
    last = max(r["finished"] for mine in per_worker.values() for r in mine) - epoch
    lines.append(f"last slab done at {last:.2f} s; the client had every result at {elapsed:.2f} s")
    return "\n".join(lines)


def _block_error(source, plan, store, edge: int = 32) -> float:
    """Relative L2 error of a block of the stored volume (edge^3 voxels at the grid's
    centre, across a slab boundary) against the float64 exact voxel average of the atoms
    that reach it (within 10 A of it)."""
    import zarr

    shape, voxel_size = plan.spec.shape, plan.spec.voxel_size
    z_chunk = plan.layout.z_chunk
    z0 = max(0, (shape[0] // 2 // z_chunk) * z_chunk - edge // 2)
    corner = np.array([z0, shape[1] // 2 - edge // 2, shape[2] // 2 - edge // 2])
    stored = np.asarray(zarr.open_group(store, mode="r")["potential"][
        0, corner[0]:corner[0] + edge, corner[1]:corner[1] + edge, corner[2]:corner[2] + edge])
    # The positions the renderer gets: float32 minus the centre in float32 (at hundreds of
    # A from the origin, float64 centring would differ by ~1e-5 A, an error of the input's
    # precision, not of the rendering).
    positions = (source.read(0, 1)[0] - np.asarray(plan.spec.centre, np.float32)).astype(np.float64)
    # Voxel i of an axis of n sits at (i - n // 2) * voxel_size; block voxel j at big-grid
    # index corner + j, i.e. at (j - edge // 2) * voxel_size after this shift (x, y, z).
    shift = ((corner + edge // 2 - np.asarray(shape) // 2) * voxel_size)[::-1]
    local = positions - shift
    near = np.all(np.abs(local) <= edge / 2 * voxel_size + 10.0, axis=1)
    reference = exact_reference(local[near], source.atomic_numbers[near], (edge,) * 3, voxel_size)
    return relative_l2(stored, reference)


def _report(name, source, plan, results, plan_s, elapsed, compiles, stored) -> str:
    slabs = [r for r in _flatten(results) if "z0" in r]
    if not slabs:  # not split: whole-volume tasks report their own stages
        return f"{name}: {elapsed:.2f} s (plan {plan_s:.2f} s), {len(results)} whole-volume tasks"
    device = [r["peak_device_mib"] for r in slabs if r.get("peak_device_mib") is not None]
    lines = [
        f"## {name}: {source.n_atoms:,} atoms, {plan.spec.shape[0]}^3, {len(slabs)} slabs of "
        f"{plan.layout.z_chunk} planes: {elapsed:.2f} s ({plan_s:.2f} s planning on the client)",
        "| stage | wall s (summed) | user s | system s |",
        "| --- | --- | --- | --- |",
    ]
    for stage in STAGES:
        lines.append(f"| {stage} | {sum(r.get(f'{stage}_s', 0.0) for r in slabs):.2f} | "
                     f"{sum(r.get(f'{stage}_user_s', 0.0) for r in slabs):.2f} | "
                     f"{sum(r.get(f'{stage}_system_s', 0.0) for r in slabs):.2f} |")
    lines.append(
        f"bytes: to devices {sum(r['to_device_bytes'] for r in slabs) / 2**20:,.0f} MiB, to host "
        f"{sum(r['to_host_bytes'] for r in slabs) / 2**20:,.0f} MiB, stored "
        f"{stored / 2**20:,.0f} MiB; atoms per slab <= {max(r['atoms'] for r in slabs):,}; "
        f"compiles {compiles} (summed over workers); peak RSS per worker "
        f"{max(r['peak_rss_mib'] for r in slabs) / 1024:.2f} GiB; peak device memory per "
        f"worker " + (f"{max(device) / 1024:.2f} GiB" if device else "-"))
    return "\n".join(lines)


def _device_pool() -> int | None:
    """Bytes this worker's JAX allocator holds on its device (reserved or in use)."""
    import jax

    device = jax.devices()[0]
    if device.platform == "cpu":
        return None
    stats = device.memory_stats() or {}
    return stats.get("pool_bytes") or stats.get("bytes_reserved") or stats.get("bytes_in_use")


def _bytes_under(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def _flatten(results):
    """Slab results come back inside each conformation's `mark_done` result."""
    out = []
    for result in results:
        out.append(result)
        out.extend(result.get("slab_results", []))
    return out


if __name__ == "__main__":
    main()
