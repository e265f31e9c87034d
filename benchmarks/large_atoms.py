"""A huge atom set through the slab-sharded path: time and peak memory per worker.

The solvated AdK box (47,681 records, first XTC frame; TIP4P virtual sites dropped, so
36,597 atoms per image) is tiled along its CRYST1 lattice vectors (default 5 x 6 x 7 =
210 images, 7.7M atoms; `--copies 6,7,7` gives 10.8M) and rendered at 512^3 with
`render_ensemble(..., n_batches=K)`: K z-slab tasks, each rendering only the atoms that
touch its slab and writing that slab to the store. Slab renders equal the unsplit render
bit for bit on CPU (tests/test_ensemble.py), so no separate error is computed here.

    python benchmarks/large_atoms.py                 # CPU workers
    python benchmarks/large_atoms.py --gpus 1        # GPU workers
"""

import argparse
import pathlib
import shutil
import tempfile
import time

import numpy as np


from _common import DATA, machine_line


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
    parser.add_argument("--n-batches", type=int, default=32, help="z-slabs")
    parser.add_argument("--workers", type=int)
    parser.add_argument("--gpus", type=int)
    parser.add_argument("--processes-per-gpu", type=int, default=4,
                        help="GPU worker processes (each holds the atom set on the host)")
    parser.add_argument("--threads-per-process", type=int, default=1,
                        help="slabs at once per GPU process (each adds its device memory)")
    args = parser.parse_args(argv)

    from distributed import Client

    from cryoensemble.distributed import make_local_cluster, plan_render, run_plan
    from cryoensemble.sources import TiledSource, TrajectorySource

    unit = TrajectorySource(DATA / "adk_oplsaa.pdb", DATA / "adk_oplsaa.xtc", frames="0:1")
    copies = tuple(int(c) for c in args.copies.split(","))
    source = TiledSource(unit, copies, lattice_vectors(DATA / "adk_oplsaa.pdb"))
    shape = (args.shape,) * 3
    workdir = tempfile.mkdtemp(prefix="cryoensemble-large-")
    cluster = make_local_cluster(n_workers=args.workers, gpus=args.gpus,
                                 processes_per_gpu=args.processes_per_gpu,
                                 threads_per_process=args.threads_per_process)
    try:
        with Client(cluster) as client:
            workers = len(client.scheduler_info()["workers"])
            start = time.perf_counter()
            # Tiles beyond the grid are cropped on purpose: the grid is the workload.
            plan = plan_render(source, shape=shape, voxel_size=args.voxel_size,
                               store=f"{workdir}/large.zarr", n_batches=args.n_batches,
                               outside="clip")
            results = run_plan(plan, client).task_results
            elapsed = time.perf_counter() - start
    finally:
        cluster.close()
    slabs = [r for r in _flatten(results) if "z0" in r]
    rss = max(r["peak_rss_mib"] for r in slabs)
    device = [r["peak_device_mib"] for r in slabs if r.get("peak_device_mib") is not None]
    atoms = max(r["atoms"] for r in slabs)
    print(machine_line())
    print(f"# {source.n_atoms:,} atoms ({copies} images of {unit.n_atoms:,}), grid "
          f"{args.shape}^3 at {args.voxel_size} A, {args.n_batches} z-slabs, {workers} workers "
          f"({'GPU' if args.gpus else 'CPU'})")
    print(f"| atoms | grid | slabs | time | max atoms per slab | peak RSS per worker | "
          f"peak device memory per worker |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print(f"| {source.n_atoms:,} | {args.shape}^3 | {args.n_batches} | {elapsed:.1f} s | "
          f"{atoms:,} | {rss / 1024:.2f} GiB | "
          f"{(max(device) / 1024):.2f} GiB |" if device else
          f"| {source.n_atoms:,} | {args.shape}^3 | {args.n_batches} | {elapsed:.1f} s | "
          f"{atoms:,} | {rss / 1024:.2f} GiB | - |")
    print("slab task time, summed (s): " + ", ".join(
        f"{key[:-2]} {sum(r[key] for r in slabs):.1f}" for key in ("select_s", "render_s", "write_s"))
        + f"; renderers built, summed over workers: {sum(_last_per_worker(slabs))}")
    shutil.rmtree(workdir, ignore_errors=True)


def _last_per_worker(slabs) -> list[int]:
    """Each worker's compile count (the largest one its slabs report)."""
    counts: dict = {}
    for r in slabs:
        counts[r["pid"]] = max(counts.get(r["pid"], 0), r["compiles"])
    return list(counts.values())


def _flatten(results):
    """Slab results come back inside each conformation's `mark_done` result."""
    out = []
    for result in results:
        out.append(result)
        out.extend(result.get("slab_results", []))
    return out


if __name__ == "__main__":
    main()
