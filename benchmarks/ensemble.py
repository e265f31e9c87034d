"""Ensemble to storage: cryoensemble's Dask path against the loop people write today.

Measures, in one run on this machine:

- the loop of ../shared/ANCHORS.md: for each of the AdK DIMS frames, render one volume
  and write one MRC file (cryojax 0.6.0's spread renderer at n_spread=(3,3,5,5,9) when it
  is installed, else cryoensemble's renderer in the same loop);
- `render_ensemble`: the AdK trajectory repeated to `--frames` conformations into one
  compressed zarr store, on an embedded LocalCluster (CPU workers, or `--gpus N`: one
  single-threaded GPU worker process per core by default, see `make_local_cluster`),
  timed from submission to the last durable write (cluster start-up excluded and printed
  separately), with where each volume's time went: per task stage the wall time (GPU
  time for `render` and the device's `encode`), the workers' host-core user and system
  time, the bytes copied to the host and written, and how many host cores were busy.
  Several `--shape`s run one after another on the same cluster; `verify` checks each store.

Accuracy is printed beside each: relative L2 of a stored volume against the exact float64
voxel average of the same frame.

    python benchmarks/ensemble.py                      # 2,000 frames at 96^3, CPU workers
    python benchmarks/ensemble.py --frames 20000 --gpus 1 --shape 128
    python benchmarks/ensemble.py --no-loop --gpus 2 --shape 96,128,256 --frames 20000,20000,5000
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


from _common import DATA, machine_line, relative_l2, tasks_by_worker


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


STAGES = ("read", "read_wait", "render", "encode", "to_host", "write", "flush", "mark")


def _pid_and_device() -> tuple:
    """(pid, CUDA_VISIBLE_DEVICES) of the worker process it runs in (`client.run`)."""
    return os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES")


def task_timeline(tasks: list, epoch: float, devices: dict) -> dict | None:
    """Per worker process, (min, max) over workers of: its tasks, the seconds its tasks
    ran, when its first started and its last ended (from `epoch`): what the stages do not
    show (waits between tasks, a worker with one task more); and the seconds its tasks
    ran over the workers of each device (`devices`: {pid: CUDA_VISIBLE_DEVICES})."""
    per_worker = tasks_by_worker(tasks)
    if not per_worker:
        return None

    def spread(values):
        values = list(values)
        return [min(values), max(values)]

    mine = per_worker.values()
    busy = {pid: sum(t["finished"] - t["started"] for t in ts) for pid, ts in per_worker.items()}
    by_device: dict = {}
    for pid, seconds in busy.items():
        by_device.setdefault(str(devices.get(pid)), []).append(seconds)
    return {"tasks": spread(len(ts) for ts in mine),
            "busy_s": spread(busy.values()),
            "first_start_s": spread(min(t["started"] for t in ts) - epoch for ts in mine),
            "last_end_s": spread(max(t["finished"] for t in ts) - epoch for ts in mine),
            "busy_s_by_device": {d: spread(b) for d, b in sorted(by_device.items())}}


def stage_profile(tasks: list, frames: int) -> dict:
    """Per stage, summed over tasks, per volume: wall ms (`render` until the device is
    done and `encode` on the device are GPU time), and the worker processes' host-core
    user and system ms; bytes per volume copied to the host and written."""
    out = {}
    for stage in STAGES:
        out[stage] = {
            "wall_ms": sum(t.get(f"{stage}_s", 0.0) for t in tasks) / frames * 1e3,
            "user_ms": sum(t.get("cpu_user_s", {}).get(stage, 0.0) for t in tasks) / frames * 1e3,
            "system_ms": sum(t.get("cpu_system_s", {}).get(stage, 0.0) for t in tasks) / frames * 1e3,
        }
    out["to_host_bytes"] = sum(t.get("to_host_bytes", 0) for t in tasks) / frames
    out["written_bytes"] = sum(t.get("written_bytes", 0) for t in tasks) / frames
    out["batches"] = sorted({t.get("batch") for t in tasks if t.get("batch")})
    out["oom_retries"] = sum(t.get("retries", 0) for t in tasks)
    out["compiles"] = sum(t.get("compiles", 0) for t in tasks)
    peaks = [t["peak_device_mib"] for t in tasks if t.get("peak_device_mib") is not None]
    out["peak_device_mib"] = max(peaks) if peaks else None
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", default="2000",
                        help="conformations (AdK DIMS repeated); one per --shape, comma-separated")
    parser.add_argument("--shape", default="96", help="grid edge(s), comma-separated: each is "
                        "timed on the same cluster")
    parser.add_argument("--voxel-size", type=float, default=1.0)
    parser.add_argument("--workers", type=int, help="CPU worker processes (default: cores)")
    parser.add_argument("--gpus", help="GPUs of the GPU workers (see make_local_cluster); a "
                        "comma-separated list (1,2) runs every shape on each, one cluster after "
                        "another, and prints the scaling")
    parser.add_argument("--processes-per-gpu", type=int, help="worker processes per GPU")
    parser.add_argument("--threads-per-process", type=int, help="concurrent tasks per GPU worker")
    parser.add_argument("--batch-size", type=int, help="conformations per task (default: auto)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    parser.add_argument("--no-loop", action="store_true", help="skip the per-frame MRC loop")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip `verify_store` after each timed render (untimed either way)")
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

    from cryoensemble.distributed import make_local_cluster
    from cryoensemble.distributed.ensemble import workers_encode_on_device
    from cryoensemble.sources import TrajectorySource

    edges = [int(e) for e in args.shape.split(",")]
    frames = [int(f) for f in args.frames.split(",")]
    frames = frames * len(edges) if len(frames) == 1 else frames
    if len(frames) != len(edges):
        parser.error("--frames: one number, or one per --shape")
    workdir = args.workdir or tempfile.mkdtemp(prefix="cryoensemble-bench-")
    dims = TrajectorySource(DATA / "adk.psf", DATA / "adk_dims.dcd")
    results = {"machine": platform.platform(), "cpus": os.cpu_count(),
               "version": cryoensemble.__version__, "runs": []}
    print(machine_line(start_jax=False))

    gpu_counts = [int(g) for g in args.gpus.split(",")] if args.gpus else [None]
    rows, references = [], {}
    for gpus in gpu_counts:
        start = time.perf_counter()
        cluster = make_local_cluster(n_workers=args.workers, gpus=gpus,
                                     processes_per_gpu=args.processes_per_gpu,
                                     threads_per_process=args.threads_per_process)
        client = Client(cluster)
        client.wait_for_workers(len(cluster.workers))
        startup = time.perf_counter() - start
        n_workers = len(client.scheduler_info()["workers"])
        slots = sum(w["nthreads"] for w in client.scheduler_info()["workers"].values())
        device_encoded = workers_encode_on_device(client)
        kind = (f"{gpus} GPU(s), {n_workers} processes x {slots // n_workers} tasks"
                if gpus else f"{n_workers} CPU worker(s)")
        codec = ("zstd on the device (nvCOMP)" if device_encoded else "zstd on the host (zarr)")
        print(f"# cluster: {kind}, {codec}; start {startup:.1f} s (excluded)", flush=True)
        for edge, n_frames in zip(edges, frames):
            run = time_one_shape(args, client, dims, (edge,) * 3, n_frames, slots,
                                 device_encoded, workdir, references)
            run.update(startup_s=startup, workers=n_workers, slots=slots, codec=codec,
                       gpus=gpus, kind=kind)
            results["runs"].append(run)
            rows.append(run)
        client.close()
        cluster.close()
    if len(gpu_counts) > 1:
        print("\n| grid | " + " | ".join(f"{g} GPU(s) frames/s" for g in gpu_counts)
              + " | scaling |")
        print("| --- |" + " --- |" * (len(gpu_counts) + 1))
        for edge in edges:
            fps = [r["fps"] for g in gpu_counts for r in rows
                   if r["gpus"] == g and r["shape"][0] == edge]
            print(f"| {edge}^3 | " + " | ".join(f"{f:.0f}" for f in fps)
                  + f" | {fps[-1] / fps[0]:.2f}x |")

    print(f"\n| method | grid | frames | frames/s | rel. error (float64 exact) | verify | ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for run in rows:
        grid = "x".join(map(str, run["shape"]))
        if run.get("loop"):
            print(f"| loop: {run['loop']['method']} | {grid} | {run['loop']['frames']} | "
                  f"{run['loop']['fps']:.1f} | {run['loop']['error']:.1e} | - | 1.0 |")
        ratio = f"{run['fps'] / run['loop']['fps']:.1f}" if run.get("loop") else "-"
        print(f"| cryoensemble render_ensemble, {run['kind']}, {run['codec']}, zarr at "
              f"{run['protocol']}:// | {grid} | {run['frames']} | {run['fps']:.1f} | "
              f"{run['error']:.1e} | {_verdict(run['verify_ok'])} | {ratio} |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)


def _verdict(ok) -> str:
    return "skipped" if ok is None else "ok" if ok else "FAILED"


def time_one_shape(args, client, dims, shape, n_frames, slots, device_encoded, workdir,
                   references) -> dict:
    """One grid on the running cluster: the optional loop, a warm-up render at the timed
    batch size, the timed render with its stage profile, accuracy and `verify`."""
    from cryoensemble.cli import parse_storage_option
    from cryoensemble.distributed import plan_render, render_ensemble, run_plan
    from cryoensemble.distributed.ensemble import _worker_memory
    from cryoensemble.sources import CycledSource
    from cryoensemble.store import as_location, open_store, verify_store

    run = {"shape": shape, "frames": n_frames}
    if not args.no_loop:
        name, loop_fps, last, last_positions = run_loop(
            dims, shape, args.voxel_size, os.path.join(workdir, "loop_mrc"), not args.no_cryojax
        )
        reference = exact_reference(last_positions, dims.atomic_numbers, shape, args.voxel_size)
        run["loop"] = {"method": name, "fps": loop_fps, "frames": len(dims),
                       "error": relative_l2(last, reference)}
    source = CycledSource(dims, n_frames)
    options = dict(parse_storage_option(text) for text in args.storage_option)
    edge = shape[0]
    store = as_location(args.store.replace("{shape}", str(edge)) if args.store
                        else os.path.join(workdir, f"ensemble{edge}.zarr"), options)
    fs, root = store.filesystem()
    if fs.exists(root):
        fs.rm(root, recursive=True)
    volume_bytes = int(np.prod(shape)) * 4

    def planned_as_render_ensemble():
        """What render_ensemble(source, ..., client=client) plans: sized for this cluster's
        task slots, device codec and worker memory."""
        plan = plan_render(source, shape=shape, voxel_size=args.voxel_size, store=store,
                           n_workers=slots, batch_size=args.batch_size, dtype=args.dtype)
        return plan.for_workers(slots, device_encoded, _worker_memory(client))

    # The batch size render_ensemble chooses, known before the timed render so that the
    # warm-up compiles it.
    batch = planned_as_render_ensemble().batch_size
    warm_start = time.perf_counter()
    # A fresh warm-up store: one left complete by an earlier cluster of the same run
    # would render nothing, and this cluster would compile inside the timed render.
    warm_store = os.path.join(workdir, f"warm{edge}.zarr")
    shutil.rmtree(warm_store, ignore_errors=True)
    render_ensemble(CycledSource(dims, 2 * batch * slots), shape=shape,
                    voxel_size=args.voxel_size, store=warm_store,
                    client=client, overwrite=True, batch_size=batch, dtype=args.dtype)
    cpu_before = host_cpu_seconds()
    start, epoch = time.perf_counter(), time.time()
    plan = planned_as_render_ensemble()
    planned = time.perf_counter()
    report = run_plan(plan, client)
    elapsed = time.perf_counter() - start
    client_stages = {"plan": planned - start, **report.stages_s}
    cpu = {k: (v - cpu_before.get(k, 0.0)) / elapsed for k, v in host_cpu_seconds().items()}
    tasks = report.task_results
    dataset = open_store(store)
    index = n_frames - 1
    positions = source.read(index, index + 1)[0] - dims.read(0, 1)[0].astype(np.float64).mean(axis=0)
    t0 = time.perf_counter()
    if (shape, index) not in references:
        references[shape, index] = exact_reference(positions, dims.atomic_numbers, shape,
                                                   args.voxel_size)
    error = relative_l2(dataset["potential"][index].values, references[shape, index])
    t1 = time.perf_counter()
    verified = None if args.no_verify else verify_store(store)
    print(f"# {shape[0]}^3: warm-up {start - warm_start:.1f} s, reference {t1 - t0:.1f} s, "
          f"verify {time.perf_counter() - t1:.1f} s (not timed)", flush=True)
    size = fs.du(root)
    profile = stage_profile(tasks, n_frames)
    fps = n_frames / elapsed
    run.update(fps=fps, error=error, verify_ok=None if verified is None else verified.ok,
               batch_size=batch,
               store_bytes=size, protocol=store.protocol, profile=profile,
               host_cores_busy=cpu, client_s=client_stages,
               timeline=task_timeline(tasks, epoch, dict(client.run(_pid_and_device).values())))
    grid = "x".join(map(str, shape))
    print(f"\n## {grid}: {n_frames} frames, {fps:.1f} frames/s, error {error:.1e}, verify "
          f"{'skipped' if verified is None else 'ok' if verified.ok else verified.bad or verified.metadata}"
          f"; batch {batch} per "
          f"task (device batches {profile['batches']}, {profile['oom_retries']} OOM retries, "
          f"peak device memory per worker {profile['peak_device_mib'] or 0:.0f} MiB, "
          f"{profile['compiles']} compiles in the timed run)")
    print("client wall s: " + ", ".join(f"{k} {v:.3f}" for k, v in client_stages.items()))
    print("stage     | wall ms/vol (render, encode: GPU) | host user ms/vol | host system ms/vol")
    for stage in STAGES:
        p = profile[stage]
        print(f"{stage:9s} | {p['wall_ms']:8.3f} | {p['user_ms']:8.3f} | {p['system_ms']:8.3f}")
    print(f"bytes per volume: raw {volume_bytes / 2**20:.2f} MiB, to host "
          f"{profile['to_host_bytes'] / 2**20:.3f} MiB, written {profile['written_bytes'] / 2**20:.3f}"
          f" MiB; store {size / 2**20:.0f} MiB ({size / (n_frames * volume_bytes):.4f} of raw)")
    print(f"to host {profile['to_host_bytes'] * fps / 1e9:.3f} GB/s, raw volumes "
          f"{fps * volume_bytes / 1e9:.2f} GB/s")
    if run["timeline"]:
        t = run["timeline"]
        print(f"tasks per worker {t['tasks'][0]}-{t['tasks'][1]}; per worker, tasks ran "
              f"{t['busy_s'][0]:.2f}-{t['busy_s'][1]:.2f} s of the {elapsed:.2f} s, the first "
              f"starting at {t['first_start_s'][0]:.2f}-{t['first_start_s'][1]:.2f} s and the last "
              f"ending at {t['last_end_s'][0]:.2f}-{t['last_end_s'][1]:.2f} s")
        if len(t["busy_s_by_device"]) > 1:
            print("per device, its workers' tasks ran: " + "; ".join(
                f"{d}: {a:.2f}-{b:.2f} s" for d, (a, b) in t["busy_s_by_device"].items()))
    if cpu:
        print(f"host cores busy during the run (of {os.cpu_count()}): " +
              ", ".join(f"{k} {v:.1f}" for k, v in cpu.items()))
    sys.stdout.flush()
    return run


if __name__ == "__main__":
    main()
