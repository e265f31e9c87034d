"""A huge atom set through `render_ensemble`'s defaults: time per stage, bytes, memory.

The solvated AdK box (47,681 records; TIP4P virtual sites dropped, so 36,597 atoms per
image) is tiled along its CRYST1 lattice vectors (default 5 x 6 x 7 = 210 images, 7.7M
atoms; `--copies 6,7,7` gives 10.8M) and rendered at 512^3 the way a user calls it: the
cluster, the z-slab split and the batch come from the product's defaults unless an
option names them. Two renders on one cluster: `cold` (frame 0: the workers' first
render, compiles included) and `warm` (frame 1, the next volume). Slab renders equal the
unsplit render bit for bit on CPU (tests/test_ensemble.py), so no error is computed here.

Per stage (summed over slab tasks): wall seconds (`select` and `render` end when the
device is done), host-core user and system seconds; bytes to the device, to the host and
in the store; compiles, peak device memory and RSS per worker.

    python benchmarks/large_atoms.py                 # CPU workers
    python benchmarks/large_atoms.py --gpus 1        # GPU workers
"""

import argparse
import os
import pathlib
import shutil
import tempfile
import time

import numpy as np


from _common import DATA, machine_line


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
            for name, frame in (("cold", 0), ("warm", 1)):
                unit = TrajectorySource(DATA / "adk_oplsaa.pdb", DATA / "adk_oplsaa.xtc",
                                        frames=f"{frame}:{frame + 1}")
                source = TiledSource(unit, copies, box)
                store = f"{workdir}/{name}.zarr"
                before = client.run(tasks.compile_count)
                t0 = time.perf_counter()
                # What render_ensemble(source, ..., client=client) does, keeping the tasks'
                # reports. Tiles beyond the grid are cropped on purpose: the grid is the
                # workload.
                plan = plan_render(source, shape=shape, voxel_size=args.voxel_size, store=store,
                                   n_workers=slots, n_batches=args.n_batches, outside="clip")
                plan = plan.for_workers(slots, ensemble.workers_encode_on_device(client))
                t1 = time.perf_counter()
                results = run_plan(plan, client).task_results
                t2 = time.perf_counter()
                after = client.run(tasks.compile_count)
                print(_report(name, source, plan, results, t1 - t0, t2 - t0,
                              sum(after[w] - before.get(w, 0) for w in after),
                              _bytes_under(store)), flush=True)
                pools = [m for m in client.run(_device_pool).values() if m is not None]
                if pools:
                    print(f"device memory held by the workers' JAX pools: largest "
                          f"{max(pools) / 2**30:.2f} GiB, all {sum(pools) / 2**30:.2f} GiB",
                          flush=True)
    finally:
        cluster.close()
        shutil.rmtree(workdir, ignore_errors=True)


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
