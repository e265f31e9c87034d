"""The client's planning of a huge atom set, without a cluster: what `plan_render` spends
before any task runs for `large_atoms.py`'s tiled AdK box (default 6 x 7 x 7 images,
10,759,518 atoms, 512^3).

Per frame (0: `large_atoms.py`'s cold render, 1: its warm one), best of `--repeats`, wall
and this process's CPU seconds (on a shared machine CPU seconds vary less): opening the
trajectory, the tiled read of the frame, `bulk_centre` of it, and `plan_render` as
`large_atoms.py` calls it (`outside="clip"`, the tiles beyond the grid cropped on purpose)
and with the default box check (`outside="warn"`) on a grid of larger voxels that holds
every atom.

    python benchmarks/plan_large_atoms.py
    python benchmarks/plan_large_atoms.py --copies 5,6,7 --repeats 5
"""

import argparse
import shutil
import tempfile
import time

from _common import DATA, machine_line
from large_atoms import lattice_vectors


def best_of(repeats: int, fn, prepare=lambda: None) -> tuple[float, float]:
    """The smallest wall and CPU seconds of `repeats` calls of `fn(prepare())`, `prepare`
    untimed."""
    wall, cpu = [], []
    for _ in range(repeats):
        argument = prepare()
        w, c = time.perf_counter(), time.process_time()
        fn(argument)
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return min(wall), min(cpu)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", default="6,7,7", help="images along a,b,c")
    parser.add_argument("--shape", type=int, default=512)
    parser.add_argument("--voxel-size", type=float, default=1.1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    from cryoensemble.distributed import plan_render
    from cryoensemble.io import bulk_centre
    from cryoensemble.sources import TiledSource, TrajectorySource

    copies = tuple(int(c) for c in args.copies.split(","))
    box = lattice_vectors(DATA / "adk_oplsaa.pdb")
    workdir = tempfile.mkdtemp(prefix="cryoensemble-plan-")
    print(machine_line(start_jax=False))
    try:
        print("| frame | atoms | step | wall s | CPU s |\n| --- | --- | --- | --- | --- |")
        for frame in (0, 1):
            def source():
                """A fresh source (no reader or plan kept between repeats), built before
                the clock starts, as `large_atoms.py` builds it."""
                unit = TrajectorySource(DATA / "adk_oplsaa.pdb", DATA / "adk_oplsaa.xtc",
                                        frames=f"{frame}:{frame + 1}")
                return TiledSource(unit, copies, box)

            tiled = source()
            positions = tiled.read(0, 1)[0]
            # A voxel size whose grid, centred on the bulk, holds every atom.
            centre = bulk_centre(positions)[0]
            reach = max(abs(positions.max(axis=0) - centre).max(),
                        abs(positions.min(axis=0) - centre).max())
            holding = 2.02 * float(reach) / args.shape
            stores = iter(range(10**6))
            steps = {
                # What the client and then every worker pays first (a worker's copy of the
                # source opens the files again).
                "open the trajectory (TrajectorySource)": (lambda _: TrajectorySource(
                    DATA / "adk_oplsaa.pdb", DATA / "adk_oplsaa.xtc",
                    frames=f"{frame}:{frame + 1}"), lambda: None),
                "read the frame": (lambda _: tiled.read(0, 1), lambda: None),
                "bulk_centre": (lambda _: bulk_centre(positions), lambda: None),
                "plan_render, outside=clip": (lambda s: plan_render(
                    s, shape=args.shape, voxel_size=args.voxel_size,
                    store=f"{workdir}/{next(stores)}.zarr", n_workers=16, outside="clip"),
                    source),
                f"plan_render, outside=warn ({holding:.2f} A voxels)": (lambda s: plan_render(
                    s, shape=args.shape, voxel_size=holding,
                    store=f"{workdir}/{next(stores)}.zarr", n_workers=16, outside="warn"),
                    source),
            }
            for step, (fn, prepare) in steps.items():
                wall, cpu = best_of(args.repeats, fn, prepare)
                print(f"| {frame} | {tiled.n_atoms:,} | {step} | {wall:.3f} | {cpu:.3f} |", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
