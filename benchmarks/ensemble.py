"""Ensemble to storage: cryoensemble's Dask path against the loop people write today.

Measures, in one run on this machine:

- the loop of ../shared/ANCHORS.md: for each of the AdK DIMS frames, render one volume
  and write one MRC file (cryojax 0.6.0's spread renderer at n_spread=(3,3,5,5,9) when it
  is installed, else cryoensemble's renderer in the same loop);
- `render_ensemble`: the AdK trajectory repeated to `--frames` conformations into one
  compressed zarr store, on an embedded LocalCluster (CPU workers, or `--gpus N`: one
  single-threaded GPU worker process per core by default, see `make_local_cluster`),
  timed from submission to the last durable write (cluster start-up excluded and printed
  separately), with where each volume's time went: task stages, the
  device-to-host rate and how many host cores were busy.

Accuracy is printed beside each: relative L2 of a stored volume against the exact float64
voxel average of the same frame.

    python benchmarks/ensemble.py                      # 2,000 frames at 96^3, CPU workers
    python benchmarks/ensemble.py --frames 20000 --gpus 1 --shape 128
    python benchmarks/ensemble.py --frames 200 --no-loop --store s3://bucket/x.zarr \
        --storage-option endpoint_url=http://127.0.0.1:5000   # an S3 endpoint
"""

import argparse
import json
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np


from _common import DATA, machine_line, relative_l2


def exact_reference(positions: np.ndarray, atomic_numbers: np.ndarray, shape, voxel_size) -> np.ndarray:
    """The float64 exact voxel average, computed in a subprocess with x64 on."""
    with tempfile.TemporaryDirectory() as tmp:
        np.save(f"{tmp}/p.npy", positions.astype(np.float64))
        np.save(f"{tmp}/z.npy", atomic_numbers)
        code = (
            "import jax, numpy as np; jax.config.update('jax_enable_x64', True);"
            "from cryoensemble.constants import PengScatteringFactorParameters as P;"
            "from cryoensemble.simulator import GaussianMixtureVolume as V, GaussianMixtureRenderFn as R;"
            f"p=np.load('{tmp}/p.npy'); z=np.load('{tmp}/z.npy');"
            f"v=R({tuple(shape)}, {voxel_size}, truncation=1e-12)(V.from_tabulated_parameters(p, P(z)));"
            f"np.save('{tmp}/ref.npy', np.asarray(v))"
        )
        subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ, JAX_PLATFORMS="cpu"))
        return np.load(f"{tmp}/ref.npy")


def host_cpu_seconds() -> dict:
    """Seconds all cores spent in user, system, iowait and idle so far (Linux /proc/stat;
    empty elsewhere): their change over a run over its time is how many cores each used."""
    try:
        with open("/proc/stat") as handle:
            fields = handle.readline().split()[1:]
    except OSError:
        return {}
    ticks = os.sysconf("SC_CLK_TCK")
    user, nice, system, idle, iowait = (int(x) / ticks for x in fields[:5])
    return {"user": user + nice, "system": system, "iowait": iowait, "idle": idle}


def loop_renderer(shape, voxel_size, atomic_numbers, use_cryojax: bool):
    """(name, f(positions) -> volume) for the per-frame loop."""
    import jax

    if use_cryojax:
        try:
            import cryojax.simulator as cxs
            from cryojax.constants import PengScatteringFactorParameters as CxPeng

            parameters = CxPeng(atomic_numbers)

            def build(p):
                return cxs.GaussianMixtureVolume.from_tabulated_parameters(p, parameters)

            spread = getattr(cxs, "GaussianMixtureRenderFn")
            render = _cryojax_spread(cxs, shape, voxel_size)
            fn = jax.jit(lambda p: render(build(p)))
            return "cryojax 0.6.0 spread (3,3,5,5,9) + MRC", fn
        except Exception as error:  # noqa: BLE001 - report and fall back
            print(f"# cryojax loop unavailable ({type(error).__name__}: {error}); using cryoensemble")
    from cryoensemble.constants import PengScatteringFactorParameters
    from cryoensemble.simulator import GaussianMixtureRenderFn, GaussianMixtureVolume

    parameters = PengScatteringFactorParameters(atomic_numbers)
    probe = GaussianMixtureVolume.from_tabulated_parameters(np.zeros((len(atomic_numbers), 3)), parameters)
    radius = GaussianMixtureRenderFn(shape, voxel_size).support_radius_for(probe)
    render = GaussianMixtureRenderFn(shape, voxel_size, support_radius=radius)
    fn = jax.jit(lambda p: render(GaussianMixtureVolume(p, probe.amplitudes, probe.variances)))
    return "cryoensemble renderer + MRC, one frame at a time", fn


def _cryojax_spread(cxs, shape, voxel_size):
    """cryojax 0.6.0's spread renderer at n_spread=(3,3,5,5,9)."""
    import inspect

    for name in dir(cxs):
        if "Spread" in name or "spread" in name:
            cls = getattr(cxs, name)
            if inspect.isclass(cls):
                try:
                    return cls(shape, voxel_size, n_spread=(3, 3, 5, 5, 9))
                except TypeError:
                    continue
    return cxs.GaussianMixtureRenderFn(shape, voxel_size, n_spread=(3, 3, 5, 5, 9))


def run_loop(source, shape, voxel_size, out_dir, use_cryojax):
    from cryoensemble.io import write_volume_to_mrc

    n = len(source)
    positions = source.read(0, n) - source.read(0, 1)[0].mean(axis=0)
    name, render = loop_renderer(shape, voxel_size, source.atomic_numbers, use_cryojax)
    np.asarray(render(positions[0]))  # compile outside the timing
    os.makedirs(out_dir, exist_ok=True)
    start = time.perf_counter()
    for i in range(n):
        volume = np.asarray(render(positions[i]))
        write_volume_to_mrc(volume, voxel_size, os.path.join(out_dir, f"frame_{i:05d}.mrc"), overwrite=True)
    elapsed = time.perf_counter() - start
    return name, n / elapsed, volume, positions[n - 1]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=2000, help="conformations (AdK DIMS repeated)")
    parser.add_argument("--shape", type=int, default=96)
    parser.add_argument("--voxel-size", type=float, default=1.0)
    parser.add_argument("--workers", type=int, help="CPU worker processes (default: cores)")
    parser.add_argument("--gpus", type=int, help="GPU workers (see make_local_cluster)")
    parser.add_argument("--processes-per-gpu", type=int, help="worker processes per GPU")
    parser.add_argument("--threads-per-process", type=int, help="concurrent tasks per GPU worker")
    parser.add_argument("--batch-size", type=int, help="conformations per task (default: auto)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    parser.add_argument("--no-loop", action="store_true", help="skip the per-frame MRC loop")
    parser.add_argument("--no-cryojax", action="store_true", help="loop with cryoensemble's renderer")
    parser.add_argument("--workdir", help="where stores go (default: a temporary directory)")
    parser.add_argument("--store", help="URL or path of the timed store (default: in --workdir); "
                        "replaced if it exists")
    parser.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                        help="fsspec storage option of --store (repeatable)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)

    from distributed import Client

    import cryoensemble
    import dask.config

    from cryoensemble.distributed import make_local_cluster, plan_render, render_ensemble, run_plan
    from cryoensemble.store import open_store
    from cryoensemble.distributed.ensemble import default_batch_size
    from cryoensemble.sources import CycledSource, TrajectorySource

    shape = (args.shape,) * 3
    workdir = args.workdir or tempfile.mkdtemp(prefix="cryoensemble-bench-")
    dims = TrajectorySource(DATA / "adk.psf", DATA / "adk_dims.dcd")
    results = {"machine": platform.platform(), "cpus": os.cpu_count(), "shape": shape,
               "frames": args.frames, "version": cryoensemble.__version__}
    print(machine_line())

    loop_fps = None
    if not args.no_loop:
        name, loop_fps, last, last_positions = run_loop(
            dims, shape, args.voxel_size, os.path.join(workdir, "loop_mrc"), not args.no_cryojax
        )
        reference = exact_reference(last_positions, dims.atomic_numbers, shape, args.voxel_size)
        loop_error = relative_l2(last, reference)
        results["loop"] = {"method": name, "fps": loop_fps, "error": loop_error}

    start = time.perf_counter()
    cluster = make_local_cluster(n_workers=args.workers, gpus=args.gpus,
                                 processes_per_gpu=args.processes_per_gpu,
                                 threads_per_process=args.threads_per_process)
    client = Client(cluster)
    client.wait_for_workers(len(cluster.workers))
    startup = time.perf_counter() - start
    n_workers = len(client.scheduler_info()["workers"])
    slots = sum(w["nthreads"] for w in client.scheduler_info()["workers"].values())
    source = CycledSource(dims, args.frames)
    from cryoensemble.cli import parse_storage_option
    from cryoensemble.store import as_location

    options = dict(parse_storage_option(text) for text in args.storage_option)
    store = as_location(args.store or os.path.join(workdir, "ensemble.zarr"), options)
    fs, root = store.filesystem()
    if fs.exists(root):
        fs.rm(root, recursive=True)
    # Warm every worker's compiled renderer at the batch size of the timed run (a batch
    # pads to it), as a long job would be.
    batch = args.batch_size or default_batch_size(args.frames, slots, int(np.prod(shape)) * 4)
    render_ensemble(CycledSource(dims, 2 * batch * slots), shape=shape,
                    voxel_size=args.voxel_size, store=os.path.join(workdir, "warm.zarr"),
                    client=client, overwrite=True, batch_size=batch, dtype=args.dtype)
    cpu_before = host_cpu_seconds()
    start = time.perf_counter()
    report = run_plan(plan_render(source, shape=shape, voxel_size=args.voxel_size, store=store,
                                  batch_size=batch, dtype=args.dtype), client)
    elapsed = time.perf_counter() - start
    dataset = open_store(store)
    cpu = {k: (v - cpu_before.get(k, 0.0)) / elapsed for k, v in host_cpu_seconds().items()}
    tasks = report.task_results
    client.close()
    cluster.close()
    fps = args.frames / elapsed
    index = args.frames - 1
    positions = source.read(index, index + 1)[0] - dims.read(0, 1)[0].astype(np.float64).mean(axis=0)
    reference = exact_reference(positions, dims.atomic_numbers, shape, args.voxel_size)
    error = relative_l2(dataset["potential"][index].values, reference)
    size = fs.du(root)
    per_volume = {key: sum(t[key] for t in tasks) / args.frames * 1e3
                  for key in ("read_s", "render_s", "to_host_s", "write_s", "mark_s")}
    copy_rate = sum(t["bytes"] for t in tasks) / sum(t["to_host_s"] for t in tasks) / 1e9
    results["ensemble"] = {"fps": fps, "error": error, "workers": n_workers, "slots": slots,
                           "batch_size": batch, "startup_s": startup, "store_bytes": size,
                           "per_volume_ms": per_volume, "to_host_gb_s": copy_rate,
                           "d2h": dask.config.get("cryoensemble.device-to-host") if args.gpus else "cpu"}

    kind = (f"{args.gpus} GPU(s), {n_workers} processes x {slots // n_workers} tasks"
            if args.gpus else f"{n_workers} CPU worker(s)")
    print(f"\n| method | frames | frames/s | rel. error (float64 exact) | ratio |")
    print("| --- | --- | --- | --- | --- |")
    if loop_fps:
        print(f"| loop: {results['loop']['method']} | {len(dims)} | {loop_fps:.1f} | "
              f"{results['loop']['error']:.1e} | 1.0 |")
    ratio = f"{fps / loop_fps:.1f}" if loop_fps else "-"
    print(f"| cryoensemble render_ensemble, {kind}, zstd zarr at {store.protocol}:// | "
          f"{args.frames} | {fps:.1f} | "
          f"{error:.1e} | {ratio} |")
    print(f"\ncluster start {startup:.1f} s (excluded); store {size / 2**20:.0f} MiB "
          f"({size / (args.frames * np.prod(shape) * 4):.2f} of raw float32); "
          f"batch {results['ensemble']['batch_size']} conformations/task")
    print("task time per volume (ms, summed over tasks; stages of one task overlap other "
          "tasks'): " + ", ".join(f"{k[:-2]} {v:.2f}" for k, v in per_volume.items()))
    print(f"device-to-host {copy_rate:.2f} GB/s per task "
          f"({results['ensemble']['d2h']}), {fps * np.prod(shape) * 4 / 1e9:.2f} GB/s overall")
    if cpu:
        results["ensemble"]["host_cores_busy"] = cpu
        print("host cores busy during the run (of " f"{os.cpu_count()}): " +
              ", ".join(f"{k} {v:.1f}" for k, v in cpu.items()))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
