"""Where an ensemble's time goes, stage by stage, on this machine's default JAX device.

For the AdK DIMS frames at a given grid, measures separately:

1. batched rendering on the device (frames/s), `lax.map` over a batch, with the
   compile count (must stay 1 across batches of one source);
2. device-to-host copy of a rendered batch (GB/s): `np.asarray`, after
   `copy_to_host_async`, from threads, into pinned host memory, and the workers' way
   (`tasks.host_pieces`);
3. encoding + writing chunk files with the store's codec (blosc zstd-1, byte shuffle)
   from 1 to all cores' threads (GB/s);
4. the renderer's accumulation variants: per-voxel, row and whole-window scatters, and
   the platform's default ("auto": per-voxel on GPUs, rows on CPUs).

    python benchmarks/pipeline_stages.py --shape 96 --batch 64
"""

import argparse
import os

import numpy as np


from _common import DATA, machine_line, timed


def cryojax_batched_rate(positions, atomic_numbers, shape, batch: int, repeats: int) -> None:
    """The peer on the same frames: cryojax 0.6.0's spread renderer at n_spread=(3,3,5,5,9)
    under `jax.lax.map` (the batched rate of ../shared/ANCHORS.md)."""
    try:
        import cryojax.simulator as cxs
        from cryojax.constants import PengScatteringFactorParameters
    except ImportError as error:
        print(f"render (cryojax spread (3,3,5,5,9), lax.map): skipped ({error})")
        return
    import jax
    import jax.numpy as jnp

    volume = cxs.GaussianMixtureVolume.from_tabulated_parameters(
        jnp.asarray(positions[0]), PengScatteringFactorParameters(atomic_numbers)
    )
    amplitudes = jnp.asarray(volume.amplitudes, jnp.float32)
    variances = jnp.asarray(volume.variances, jnp.float32)
    render = cxs.GaussianMixtureRenderFn(shape, 1.0, n_spread=(3, 3, 5, 5, 9))
    run = jax.jit(lambda p: jax.lax.map(
        lambda one: render(cxs.GaussianMixtureVolume(one, amplitudes, variances)), p))
    frames = jnp.asarray(positions)
    seconds = timed(lambda: run(frames).block_until_ready(), repeats)
    print(f"render (cryojax spread (3,3,5,5,9), lax.map): {batch / seconds:9.1f} frames/s  "
          f"({seconds / batch * 1e3:.3f} ms/frame)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, default=96)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    import jax
    import dask.config

    from cryoensemble.distributed import tasks
    from cryoensemble.sources import CycledSource, TrajectorySource

    shape = (args.shape,) * 3
    source = CycledSource(TrajectorySource(DATA / "adk.psf", DATA / "adk_dims.dcd"), args.batch)
    positions = source.read(0, args.batch)
    positions = positions - positions[0].mean(axis=0)
    spec = tasks.RenderSpec(shape, 1.0, 1e-6, args.batch, (0.0, 0.0, 0.0), 0.0, "")
    plan = tasks.support_plan(source, spec)
    radius = plan.radius
    everything = np.ones(plan.amplitudes.shape[0], bool)
    *padded, groups = tasks._select(positions[:, plan.order], plan, everything)
    device_inputs = [jax.device_put(x) for x in padded]
    print(machine_line())
    print(f"# device {jax.devices()[0]}, jax {jax.__version__}, grid {args.shape}^3, "
          f"batch {args.batch}, support groups (atoms, radius A, k): {groups}")

    for scatter in ("auto", "voxels", "rows", "windows"):
        run = tasks.batch_renderer(shape, 1.0, groups, scatter=scatter)
        seconds = timed(lambda: run(*device_inputs, 0).block_until_ready(), args.repeats)
        print(f"render ({scatter} scatter): {args.batch / seconds:9.1f} frames/s  "
              f"({seconds / args.batch * 1e3:.3f} ms/frame)")
    cryojax_batched_rate(positions, source.atomic_numbers, shape, args.batch, args.repeats)
    tasks.worker_state().renderers.clear()
    before = tasks.compile_count()
    run = tasks.batch_renderer(shape, 1.0, groups)
    volumes = run(*device_inputs, 0)
    volumes.block_until_ready()
    for _ in range(3):
        run(*device_inputs, 0).block_until_ready()
    print(f"renderers built for 4 batches of one source: {tasks.compile_count() - before}")

    nbytes = volumes.nbytes
    render_only = timed(lambda: run(*device_inputs, 0).block_until_ready(), args.repeats)
    print(f"render of the batch: {render_only * 1e3:.1f} ms")

    def rate(fetch):
        """Device-to-host GB/s of `fetch(device batch)`, the render's time taken out."""
        seconds = timed(lambda: fetch(run(*device_inputs, 0)), args.repeats)
        return f"{nbytes / max(seconds - render_only, 1e-9) / 1e9:6.2f} GB/s"

    def async_copy(out):
        out.copy_to_host_async()
        return np.asarray(out)

    from concurrent.futures import ThreadPoolExecutor

    copy_pool = ThreadPoolExecutor(8)
    device = jax.devices()[0]
    print(f"device->host np.asarray: {rate(np.asarray)}")
    print(f"device->host copy_to_host_async: {rate(async_copy)}")
    print(f"device->host 8 slices from 8 threads: "
          f"{rate(lambda out: list(copy_pool.map(np.asarray, [out[i::8] for i in range(8)])))}")
    if device.platform != "cpu":
        pinned = jax.sharding.SingleDeviceSharding(device, memory_kind="pinned_host")
        try:
            print(f"device->host device_put pinned_host, whole batch: "
                  f"{rate(lambda out: np.asarray(jax.device_put(out, pinned)))}")
            on_host = jax.device_put(volumes, pinned)
            seconds = timed(lambda: np.asarray(on_host), args.repeats)
            print(f"  np.asarray of a pinned_host array: {nbytes / seconds / 1e9:6.2f} GB/s")
            to_host = jax.jit(lambda *a: run(*a), out_shardings=pinned)
            print(f"device->host jit out_shardings pinned_host: "
                  f"{rate(lambda _: np.asarray(to_host(*device_inputs, 0)))}")
        except Exception as error:  # noqa: BLE001 - report, go on
            print(f"pinned_host: {type(error).__name__}: {error}")
    for mode in ("pinned", "async"):
        with dask.config.set({"cryoensemble.device-to-host": mode}):
            print(f"device->host tasks.host_pieces ({mode}, {tasks._PIECE_BYTES >> 20} MiB "
                  f"pieces): {rate(lambda out: list(tasks.host_pieces(out, out.shape[0])))}")
    half = jax.jit(lambda *a: run(*a).astype(jax.numpy.float16))
    seconds = timed(lambda: np.asarray(half(*device_inputs, 0)), args.repeats)
    print(f"device->host float16 (half the bytes): render+copy {seconds * 1e3:.1f} ms")

    host = np.asarray(volumes)
    import shutil
    import tempfile

    from cryoensemble import store as store_module

    import zarr

    workdir = tempfile.mkdtemp()
    layout = store_module.StoreLayout(args.batch, shape, "float32", args.shape)
    parameters = {"voxel_size": 1.0, "shape": list(shape), "dtype": "float32",
                  "n_conformations": args.batch, "z_chunk": args.shape}
    store_module.prepare_store(f"{workdir}/s.zarr", layout, parameters, {}, {})
    writer = store_module.open_writer(f"{workdir}/s.zarr")
    for threads in sorted({1, 2, 4, 8, os.cpu_count()}):
        with zarr.config.set({"threading.max_workers": threads}):
            seconds = timed(lambda: writer.write_volumes(0, host), 3)
        print(f"shards of the batch through zarr (zstd + crc32c, fsync), {threads:2d} threads: "
              f"{nbytes / seconds / 1e9:6.2f} GB/s ({seconds / args.batch * 1e3:.2f} ms/volume)")
    stored = sum(os.path.getsize(os.path.join(d, f))
                 for d, _, files in os.walk(f"{workdir}/s.zarr/potential/c") for f in files)
    print(f"compressed / raw: {stored / nbytes:.3f}")
    shutil.rmtree(workdir)

if __name__ == "__main__":
    main()
