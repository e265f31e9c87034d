"""Volumes leave the GPU compressed: nvCOMP zstd on the device against the host codecs.

For batches of AdK DIMS frames (MDAnalysis reads adk.psf + adk_dims.dcd; or `--frames
FILE.npz` with `positions` and `atomic_numbers`, e.g. written by `--save-frames` on a
machine that has MDAnalysis) rendered on the default JAX device with the public
`GaussianMixtureRenderFn` under `lax.map`, times per stage:

- render: the batch, on the device;
- GPU path (`ZarrChunkEncoder(compressor="nvcomp")`): cut into the array's chunks on the
  device, nvCOMP batched zstd (raw frames), device-to-host copy of the compressed bytes
  only, crc32c / shard index on the host; host user and system CPU time of the whole
  encode; the objects are read back through zarr and compared bit for bit;
- CPU path in the same run: device-to-host copy of the raw batch, then zstd-1 (numcodecs,
  the chunk codec of `[bytes, zstd, crc32c]`) and blosc zstd-1 byte-shuffle (the store's
  codec today) on `--threads` host threads;

and prints the compression ratio and volumes/s of each path (render included).

    python benchmarks/device_codec.py --shapes 96,128,256 --batch 64
"""

import argparse
import os
import pathlib
import resource
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np


ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = pathlib.Path(os.environ.get("CRYOENSEMBLE_SHARED", ROOT.parent / "shared")) / "data"


def read_frames(path) -> tuple[np.ndarray, np.ndarray]:
    if path is not None:
        data = np.load(path)
        return data["positions"], data["atomic_numbers"]
    from cryoensemble.sources import TrajectorySource

    source = TrajectorySource(DATA / "adk.psf", DATA / "adk_dims.dcd")
    return source.read(0, len(source)), source.atomic_numbers


def cpu_times() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def timed(fn, repeats):
    """Median wall seconds of `fn()` and the mean host (user, system) CPU seconds per call."""
    fn()
    walls, user, system = [], 0.0, 0.0
    for _ in range(repeats):
        u0, s0 = cpu_times()
        start = time.perf_counter()
        fn()
        walls.append(time.perf_counter() - start)
        u1, s1 = cpu_times()
        user, system = user + u1 - u0, system + s1 - s0
    return float(np.median(walls)), user / repeats, system / repeats


def batch_renderer(positions, atomic_numbers, shape):
    """A jitted `(b, n, 3) -> (b, z, y, x)` float32 renderer of these atoms (public API)."""
    import jax
    import jax.numpy as jnp

    from cryoensemble.constants import PengScatteringFactorParameters
    from cryoensemble.simulator import GaussianMixtureRenderFn, GaussianMixtureVolume

    first = GaussianMixtureVolume.from_tabulated_parameters(
        jnp.asarray(positions[0]), PengScatteringFactorParameters(atomic_numbers)
    )
    render = GaussianMixtureRenderFn(shape, 1.0)
    amplitudes, variances = first.amplitudes, first.variances
    run = jax.jit(lambda p: jax.lax.map(
        lambda one: render(GaussianMixtureVolume(one, amplitudes, variances)), p))
    return run, jnp.asarray(positions)


def new_array(store, n, shape, chunks, shards):
    import zarr
    from zarr.codecs import BytesCodec, Crc32cCodec, ZstdCodec

    return zarr.create_array(
        store, shape=(n, *shape), chunks=chunks, shards=shards, dtype="float32",
        fill_value=0, serializer=BytesCodec(), compressors=[ZstdCodec(level=1), Crc32cCodec()],
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="96,128,256")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--inner", type=int, default=64,
                        help="inner chunk edge of the sharded layout (one shard per volume)")
    parser.add_argument("--compressor", default="nvcomp",
                        help="the encoder's compressor ('numcodecs' to try the path without a GPU)")
    parser.add_argument("--frames", default=None, help="npz with positions, atomic_numbers")
    parser.add_argument("--save-frames", default=None, help="write the frames to this npz, exit")
    args = parser.parse_args(argv)

    positions, atomic_numbers = read_frames(args.frames)
    if args.save_frames:
        np.savez_compressed(args.save_frames, positions=positions, atomic_numbers=atomic_numbers)
        return
    import google_crc32c
    import jax
    import numcodecs
    import zarr
    from zarr.core.buffer import cpu

    from cryoensemble.distributed._device_codec import ZarrChunkEncoder, device_codec_available

    device = jax.devices()[0]
    print(f"# device {device.device_kind} ({device.platform}), jax {jax.__version__}, "
          f"host cores {os.cpu_count()}, batch {args.batch}, nvCOMP available: "
          f"{device_codec_available()}", flush=True)
    frames = np.resize(np.arange(len(positions)), args.batch)  # cycle the 98 frames
    positions = positions[frames] - positions[0].mean(axis=0)
    zstd, blosc = numcodecs.Zstd(level=1), numcodecs.Blosc("zstd", 1, numcodecs.Blosc.SHUFFLE)
    pool = ThreadPoolExecutor(args.threads)
    for edge in (int(s) for s in args.shapes.split(",")):
        shape = (edge,) * 3
        run, device_positions = batch_renderer(positions, atomic_numbers, shape)
        volumes = run(device_positions).block_until_ready()
        raw = volumes.nbytes
        seconds, _, _ = timed(lambda: run(device_positions).block_until_ready(), args.repeats)
        render_s = seconds
        print(f"\n## {edge}^3, batch {args.batch}: raw {raw / 2**20:.0f} MiB", flush=True)
        print(f"render                     {render_s * 1e3:8.1f} ms  {args.batch / render_s:8.0f} vol/s")

        # GPU path, per layout.
        shard_edge = -(-edge // args.inner) * args.inner
        layouts = {
            "one chunk per volume": ((1, *shape), None),
            f"shard per volume, {args.inner}^3 inner": ((1,) + (args.inner,) * 3,
                                                       (1,) + (shard_edge,) * 3),
        }
        if args.compressor == "numcodecs" or device_codec_available():
            for name, (chunks, shards) in layouts.items():
                metadata = {}
                array = new_array(zarr.storage.MemoryStore(metadata), args.batch, shape, chunks, shards)
                encoder = ZarrChunkEncoder(array, compressor=args.compressor)
                state = {}

                def stage_chunks():
                    state["blocks"], state["keep"] = encoder.chunks(volumes)
                    state["blocks"].block_until_ready()

                def stage_compress():
                    state["frames"] = encoder.compress(state["blocks"], state["keep"])

                def stage_fetch():
                    state["payload"] = encoder.fetch(state["frames"])

                def stage_assemble():
                    state["objects"] = encoder.assemble(state["payload"], state["keep"], 0)

                stages = [("chunk on device", stage_chunks), ("nvCOMP zstd", stage_compress),
                          ("D2H compressed", stage_fetch), ("crc32c + index", stage_assemble)]
                print(f"- GPU path, {name}: {encoder}")
                total = 0.0
                for label, fn in stages:
                    s, user, system = timed(fn, args.repeats)
                    total += s
                    print(f"  {label:24s} {s * 1e3:8.1f} ms  host user {user * 1e3:7.1f} ms "
                          f"sys {system * 1e3:6.1f} ms")
                whole, user, system = timed(lambda: encoder.encode(volumes, 0), args.repeats)
                stored = sum(len(v) for v in state["objects"].values() if v is not None)
                print(f"  encode (all stages)      {whole * 1e3:8.1f} ms  host user {user * 1e3:7.1f} ms "
                      f"sys {system * 1e3:6.1f} ms  -> {args.batch / whole:7.0f} vol/s encode, "
                      f"{args.batch / (whole + render_s):7.0f} vol/s render+encode; "
                      f"{int(state['keep'].sum())} frames, stored/raw {stored / raw:.4f}")
                # Read back through zarr's own pipeline (a few volumes): bit for bit.
                objects = {key: cpu.Buffer.from_bytes(value)
                           for key, value in state["objects"].items() if value is not None}
                objects["zarr.json"] = metadata["zarr.json"]
                back = zarr.open_array(zarr.storage.MemoryStore(objects), mode="r")[:4]
                same = np.array_equal(back.view(np.uint32), np.asarray(volumes[:4]).view(np.uint32))
                print(f"  zarr read-back of 4 volumes bitwise equal: {same}", flush=True)

        # CPU path: raw batch to the host, host codecs on threads (one task per volume).
        host = {}

        def d2h():
            host["v"] = np.asarray(run(device_positions))

        s, user, system = timed(d2h, args.repeats)
        d2h_s = max(s - render_s, 1e-9)
        print(f"- CPU path: render + D2H raw {s * 1e3:8.1f} ms (D2H ~{raw / d2h_s / 1e9:.1f} GB/s)  "
              f"host user {user * 1e3:.0f} ms sys {system * 1e3:.0f} ms")
        for label, codec in (("zstd-1 + crc32c", zstd), ("blosc zstd-1 shuffle", blosc)):
            def encode_one(volume, codec=codec):
                frame = codec.encode(volume)
                return frame + np.uint32(google_crc32c.value(frame)).tobytes()

            for threads in sorted({1, args.threads}):
                if threads == 1:
                    batch = host["v"][: max(1, args.batch // 8)]
                    work = lambda: [encode_one(v) for v in batch]
                else:
                    batch = host["v"]
                    work = lambda: list(pool.map(encode_one, batch))
                s, user, system = timed(work, 1 if threads == 1 else args.repeats)
                per_volume = s / len(batch)
                ratio = sum(len(encode_one(v)) for v in host["v"][:4]) / host["v"][:4].nbytes
                print(f"  {label:22s} {threads:3d} threads {per_volume * 1e3:8.2f} ms/vol "
                      f"({1 / per_volume:7.0f} vol/s encode, "
                      f"{args.batch / (per_volume * args.batch + d2h_s + render_s):7.0f} vol/s "
                      f"render+D2H+encode) host user {user / len(batch) * 1e3:.1f} sys "
                      f"{system / len(batch) * 1e3:.1f} ms/vol; stored/raw {ratio:.4f}", flush=True)
        del volumes, host


if __name__ == "__main__":
    main()
