"""Where an ensemble's time goes, stage by stage, on this machine's default JAX device.

For the AdK DIMS frames at a given grid, measures separately:

1. batched rendering on the device (frames/s), `lax.map` over a batch, with the
   compile count (must stay 1 across batches of one source);
2. device-to-host copy of a rendered batch (GB/s): `np.asarray`, and after
   `copy_to_host_async`;
3. compression of volumes with blosc zstd (bitshuffle) at 1 and all cores (GB/s);
4. the row-scatter and whole-window-scatter variants of the renderer's accumulation.

    python benchmarks/pipeline_stages.py --shape 96 --batch 64
"""

import argparse
import os
import pathlib
import time

import numpy as np


ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = pathlib.Path(os.environ.get("CRYOENSEMBLE_SHARED", ROOT.parent / "shared")) / "data"


def timed(fn, repeats=5):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, default=96)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    import jax
    import numcodecs
    import numcodecs.blosc

    from cryoensemble.distributed import tasks
    from cryoensemble.simulator import gaussian_kernels
    from cryoensemble.sources import CycledSource, TrajectorySource

    shape = (args.shape,) * 3
    source = CycledSource(TrajectorySource(DATA / "adk.psf", DATA / "adk_dims.dcd"), args.batch)
    positions = source.read(0, args.batch)
    positions = positions - positions[0].mean(axis=0)
    spec = tasks.RenderSpec(shape, 1.0, 1e-6, args.batch, (0.0, 0.0, 0.0), 0.0, "")
    plan = tasks.support_plan(source, spec)
    radius = plan.radius
    everything = [np.ones(n, bool) for n, _, _ in plan.groups]
    *padded, groups = tasks._select(positions[:, plan.order], plan, everything)
    device_inputs = [jax.device_put(x) for x in padded]
    print(f"# device {jax.devices()[0]}, jax {jax.__version__}, grid {args.shape}^3, "
          f"batch {args.batch}, support groups (atoms, radius A, k): {groups}")

    for scatter in ("rows", "windows"):
        gaussian_kernels.SCATTER = scatter
        tasks.batch_renderer.cache_clear()
        run = tasks.batch_renderer(shape, 1.0, groups)
        seconds = timed(lambda: run(*device_inputs, 0).block_until_ready(), args.repeats)
        print(f"render ({scatter} scatter): {args.batch / seconds:9.1f} frames/s  "
              f"({seconds / args.batch * 1e3:.3f} ms/frame)")
    gaussian_kernels.SCATTER = "rows"
    tasks.batch_renderer.cache_clear()
    before = tasks.compile_count()
    run = tasks.batch_renderer(shape, 1.0, groups)
    volumes = run(*device_inputs, 0)
    volumes.block_until_ready()
    for _ in range(3):
        run(*device_inputs, 0).block_until_ready()
    print(f"renderers built for 4 batches of one source: {tasks.compile_count() - before}")

    nbytes = volumes.nbytes
    seconds = timed(lambda: np.asarray(run(*device_inputs, 0)), args.repeats)
    render_only = timed(lambda: run(*device_inputs, 0).block_until_ready(), args.repeats)
    print(f"device->host np.asarray: {nbytes / max(seconds - render_only, 1e-9) / 1e9:6.2f} GB/s "
          f"(render+copy {seconds * 1e3:.1f} ms, render {render_only * 1e3:.1f} ms)")

    def async_copy():
        out = run(*device_inputs, 0)
        out.copy_to_host_async()
        return np.asarray(out)

    seconds = timed(async_copy, args.repeats)
    print(f"device->host copy_to_host_async: {nbytes / max(seconds - render_only, 1e-9) / 1e9:6.2f} GB/s")
    half = jax.jit(lambda *a: run(*a).astype(jax.numpy.float16))
    seconds = timed(lambda: np.asarray(half(*device_inputs, 0)), args.repeats)
    print(f"device->host float16 (half the bytes): render+copy {seconds * 1e3:.1f} ms")

    from concurrent.futures import ThreadPoolExecutor

    def parallel_copy(pieces=8):
        out = run(*device_inputs, 0)
        slices = [out[i::pieces] for i in range(pieces)]
        with ThreadPoolExecutor(pieces) as pool:
            return list(pool.map(np.asarray, slices))

    seconds = timed(parallel_copy, args.repeats)
    print(f"device->host 8 strided slices from 8 threads: "
          f"{nbytes / max(seconds - render_only, 1e-9) / 1e9:6.2f} GB/s")

    def per_volume_get():
        out = run(*device_inputs, 0)
        return jax.device_get([out[i] for i in range(out.shape[0])])

    seconds = timed(per_volume_get, args.repeats)
    print(f"device->host device_get per volume: {nbytes / max(seconds - render_only, 1e-9) / 1e9:6.2f} GB/s")

    host = np.asarray(volumes)
    import shutil
    import tempfile

    from cryoensemble import store as store_module

    workdir = tempfile.mkdtemp()
    layout = store_module.StoreLayout(args.batch, shape, "float32", args.shape)
    store_module.prepare_store(f"{workdir}/s.zarr", layout, {"voxel_size": 1.0}, {}, {})
    seconds = timed(lambda: store_module.write_volumes(f"{workdir}/s.zarr", 0, host), 3)
    print(f"zarr write of the batch (store codec): {nbytes / seconds / 1e9:6.2f} GB/s "
          f"({seconds / args.batch * 1e3:.2f} ms/volume)")
    shutil.rmtree(workdir)
    codec = numcodecs.Blosc(cname="zstd", clevel=1, shuffle=numcodecs.Blosc.SHUFFLE)
    for threads in (1, os.cpu_count()):
        numcodecs.blosc.set_nthreads(threads)
        seconds = timed(lambda: [codec.encode(v) for v in host[:16]], 3)
        ratio = sum(len(codec.encode(v)) for v in host[:4]) / host[:4].nbytes
        print(f"blosc zstd-1 shuffle, main thread, {threads:2d} threads: {host[:16].nbytes / seconds / 1e9:6.2f} GB/s "
              f"(ratio {ratio:.2f})")


if __name__ == "__main__":
    main()
