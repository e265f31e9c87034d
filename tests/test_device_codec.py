"""Volumes encoded into zarr chunk objects (`_device_codec`), checked against zarr itself.

On CPU: the chunk layout, padding, empty chunks, crc32c and shard index, byte for byte
against the objects zarr writes for the same array (same zstd level, numcodecs frames).
On a CUDA device with nvCOMP: the GPU's zstd frames, read back through zarr's own codec
pipeline, equal the volumes bit for bit.
"""

import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, ZstdCodec

from cryoensemble.distributed._device_codec import ZarrChunkEncoder, device_codec_available

from conftest import GOLDEN


LAYOUTS = {
    # (volume shape, chunks, shards): whole-volume chunks and z-slabs (no copy on the
    # device); chunks with partial edges; shards of inner chunks or of z-slabs; shards
    # with edge shards and a fill-only inner chunk.
    "volume": ((40, 45, 50), (1, 40, 45, 50), None),
    "slabs": ((40, 45, 50), (1, 10, 45, 50), None),
    "slab_shards": ((40, 45, 50), (1, 8, 45, 50), (1, 40, 45, 50)),
    "chunks": ((40, 45, 50), (1, 16, 16, 32), None),
    "shards": ((40, 45, 50), (1, 20, 15, 25), (1, 40, 45, 50)),
    "edge_shards": ((40, 45, 50), (1, 8, 16, 16), (1, 24, 32, 32)),
    # A shard holding one inner chunk still has its index (the store's small grids).
    "one_chunk_shards": ((40, 45, 50), (1, 40, 45, 50), (1, 40, 45, 50)),
}


def golden_volumes(shape, dtype) -> np.ndarray:
    """Three real AdK potentials (crops of the golden 96^3 volume), one with a -0.0 voxel
    in its empty space (zarr stores such a chunk) and one all zero (stored as nothing)."""
    golden = np.load(GOLDEN["cubic96"])["volume_zyx"]
    z, y, x = shape
    crop = golden[28 : 28 + z, 25 : 25 + y, 23 : 23 + x]
    volumes = np.stack([crop, crop[::-1], np.zeros(shape)]).astype(dtype)
    volumes[1, -1, -1, -1] = -0.0
    return volumes


def new_array(shape, chunks, shards, dtype, store=None, level=1):
    return zarr.create_array(
        store if store is not None else zarr.storage.MemoryStore(),
        shape=(6, *shape),
        chunks=chunks,
        shards=shards,
        dtype=dtype,
        fill_value=0,
        serializer=BytesCodec(),
        compressors=[ZstdCodec(level=level), Crc32cCodec()],
    )


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_host_objects_equal_zarrs_own(layout):
    """numcodecs frames + this module's layout, crc32c and shard index == zarr's writes."""
    shape, chunks, shards = LAYOUTS[layout]
    volumes = golden_volumes(shape, np.float32)
    objects: dict = {}
    array = new_array(shape, chunks, shards, "float32", zarr.storage.MemoryStore(objects))
    array[2:5] = volumes
    encoder = ZarrChunkEncoder(array, compressor="numcodecs")
    encoded = encoder.encode(volumes, 2)
    ours = {key: value for key, value in encoded.items() if value is not None}
    theirs = {key: value.to_bytes() for key, value in objects.items() if key != "zarr.json"}
    assert sorted(ours) == sorted(theirs)
    assert all(ours[key] == theirs[key] for key in theirs)
    # The all-zero conformation is a None for each of its objects, none of them stored.
    assert [key for key, value in encoded.items() if value is None]
    assert all(encoded[key] is None for key in encoded if key.startswith("c/4/"))


def test_written_objects_read_back_through_zarr():
    """Objects set into a store by key decode through zarr to the volumes, bit for bit,
    and a flipped byte is a checksum error, not a wrong number."""
    from zarr.core.buffer import cpu

    shape, chunks, shards = LAYOUTS["edge_shards"]
    volumes = golden_volumes(shape, np.float16)
    objects: dict = {}
    array = new_array(shape, chunks, shards, "float16", zarr.storage.MemoryStore(objects))
    encoded = ZarrChunkEncoder(array, compressor="numcodecs").encode(volumes, 1)
    for key, value in encoded.items():
        if value is not None:
            objects[key] = cpu.Buffer.from_bytes(value)
    back = zarr.open_array(zarr.storage.MemoryStore(objects), mode="r")[1:4]
    assert np.array_equal(back.view(np.uint16), volumes.view(np.uint16))
    key = next(key for key, value in encoded.items() if value is not None)
    broken = bytearray(encoded[key])
    broken[10] ^= 0x01
    objects[key] = cpu.Buffer.from_bytes(bytes(broken))
    with pytest.raises(ValueError, match="checksum"):
        zarr.open_array(zarr.storage.MemoryStore(objects), mode="r")[1:4]


def test_bad_input_is_a_one_line_error():
    shape, chunks, shards = LAYOUTS["volume"]
    array = new_array(shape, chunks, shards, "float32")
    encoder = ZarrChunkEncoder(array, compressor="numcodecs")
    with pytest.raises(ValueError, match=r"shape \(2, 40, 45, 49\)"):
        encoder.encode(np.zeros((2, 40, 45, 49), np.float32), 0)
    with pytest.raises(ValueError, match="float64, the array is float32"):
        encoder.encode(np.zeros((2, *shape)), 0)
    with pytest.raises(ValueError, match="compressor must be"):
        ZarrChunkEncoder(array, compressor="gpu")
    blosc = zarr.create_array(
        zarr.storage.MemoryStore(), shape=(2, *shape), chunks=chunks, dtype="float32",
        compressors=[BloscCodec()],
    )
    with pytest.raises(ValueError, match=r"need \[bytes\(little\), zstd"):
        ZarrChunkEncoder(blosc, compressor="numcodecs")
    two = zarr.create_array(
        zarr.storage.MemoryStore(), shape=(4, *shape), chunks=(2, *shape), dtype="float32",
        serializer=BytesCodec(), compressors=[ZstdCodec(), Crc32cCodec()],
    )
    with pytest.raises(ValueError, match="one conformation"):
        ZarrChunkEncoder(two, compressor="numcodecs")


def test_availability_matches_the_platform():
    import jax

    has_gpu = any(device.platform == "gpu" for device in jax.devices())
    try:
        from nvidia import nvcomp  # noqa: F401

        has_nvcomp = True
    except ImportError:
        has_nvcomp = False
    assert device_codec_available() == (has_gpu and has_nvcomp)
    if not device_codec_available():
        array = new_array(*LAYOUTS["volume"], "float32")
        with pytest.raises(RuntimeError, match="nvcomp"):
            ZarrChunkEncoder(array, compressor="nvcomp")


# z-slab shards of inner chunks, the last shard shorter (16 + 16 + 8 planes).
SLAB_SHARDS = ((40, 45, 50), (1, 8, 15, 25), (1, 16, 45, 50))


def encode_slabs(encoder, volumes, start: int) -> dict:
    """Every shard of `volumes` through `encode_slab`, one z-slab at a time."""
    height, nz = encoder.shard_shape[0], volumes.shape[1]
    out = {}
    for i, volume in enumerate(volumes):
        for z0 in range(0, nz, height):
            out.update(encoder.encode_slab(volume[None, z0 : z0 + height], start + i, z0))
    return out


def test_slab_objects_equal_zarrs_own():
    """Slab by slab (the huge-atom path), numcodecs frames: the objects zarr writes for the
    whole volumes, a fill-only slab as None; a slab that is not one shard is refused."""
    shape, chunks, shards = SLAB_SHARDS
    volumes = golden_volumes(shape, np.float32)
    objects: dict = {}
    array = new_array(shape, chunks, shards, "float32", zarr.storage.MemoryStore(objects))
    array[2:5] = volumes
    encoder = ZarrChunkEncoder(array, compressor="numcodecs")
    encoded = encode_slabs(encoder, volumes, 2)
    theirs = {key: value.to_bytes() for key, value in objects.items() if key != "zarr.json"}
    assert sorted(k for k, v in encoded.items() if v is not None) == sorted(theirs)
    assert all(encoded[key] == theirs[key] for key in theirs)
    assert all(encoded[f"c/4/{s}/0/0"] is None for s in range(3))
    with pytest.raises(ValueError, match="not one shard"):
        encoder.encode_slab(volumes[:1, 8:24], 2, 8)


@pytest.mark.skipif(
    not device_codec_available(), reason="needs a CUDA device for JAX and nvidia-nvcomp"
)
def test_gpu_slab_objects_read_back_through_zarr():
    """nvCOMP slab by slab: zarr on the host reads the volumes back bit for bit."""
    import jax
    from zarr.core.buffer import cpu

    shape, chunks, shards = SLAB_SHARDS
    volumes = golden_volumes(shape, np.float32)
    objects: dict = {}
    array = new_array(shape, chunks, shards, "float32", zarr.storage.MemoryStore(objects))
    encoder = ZarrChunkEncoder(array, compressor="nvcomp")
    encoded = encode_slabs(encoder, jax.device_put(volumes, jax.devices("gpu")[0]), 1)
    for key, value in encoded.items():
        if value is not None:
            objects[key] = cpu.Buffer.from_bytes(value)
    back = zarr.open_array(zarr.storage.MemoryStore(objects), mode="r")[1:4]
    assert np.array_equal(back.view(np.uint32), volumes.view(np.uint32))


@pytest.mark.skipif(
    not device_codec_available(), reason="needs a CUDA device for JAX and nvidia-nvcomp"
)
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_gpu_frames_decode_through_zarr(layout, dtype):
    """nvCOMP's frames (raw zstd) in zarr's objects: zarr on the host reads the volumes
    back bit for bit, and the objects are smaller than the raw volumes."""
    import jax
    from numcodecs import Zstd
    from zarr.core.buffer import cpu

    shape, chunks, shards = LAYOUTS[layout]
    volumes = golden_volumes(shape, dtype)
    objects: dict = {}
    array = new_array(shape, chunks, shards, np.dtype(dtype).name, zarr.storage.MemoryStore(objects))
    encoder = ZarrChunkEncoder(array, compressor="nvcomp")
    on_device = jax.device_put(volumes, jax.devices("gpu")[0])
    blocks, keep = encoder.chunks(on_device)
    frames = encoder.fetch(encoder.compress(blocks, keep))
    host_blocks = np.asarray(blocks).reshape(len(keep), -1)[keep]
    for frame, block in zip(frames, host_blocks):  # each a standard zstd frame
        assert Zstd().decode(frame) == block.tobytes()
    encoded = encoder.assemble(frames, keep, 3)
    for key, value in encoded.items():
        if value is not None:
            objects[key] = cpu.Buffer.from_bytes(value)
    back = zarr.open_array(zarr.storage.MemoryStore(objects), mode="r")[3:6]
    unsigned = f"u{np.dtype(dtype).itemsize}"
    assert np.array_equal(back.view(unsigned), volumes.view(unsigned))
    assert sum(len(v) for v in encoded.values() if v is not None) < volumes.nbytes


def _new_store(path, layout):
    from cryoensemble.store import prepare_store

    parameters = {"voxel_size": 1.0, "shape": list(layout.shape), "dtype": layout.dtype,
                  "n_conformations": layout.n_conformations, "z_chunk": layout.z_chunk}
    assert prepare_store(str(path), layout, parameters, {}, {})
    return str(path)


@pytest.mark.parametrize("z_chunk", [40, 16])
def test_store_objects_from_the_encoder_equal_zarrs_and_read_back(tmp_path, z_chunk):
    """The GPU workers' write path (encoder objects -> `StoreWriter.write_objects`), here
    with numcodecs frames: the store holds exactly the objects zarr's own writes make
    (`write_volumes`), reads back bit for bit through `open_store`, and verifies; the
    all-zero conformation is recorded empty, not stored."""
    from cryoensemble.store import StoreLayout, open_store, open_writer, verify_store

    volumes = golden_volumes((40, 45, 50), np.float32)
    layout = StoreLayout(3, (40, 45, 50), "float32", z_chunk)
    ours, zarrs = _new_store(tmp_path / "ours", layout), _new_store(tmp_path / "zarr", layout)
    writer = open_writer(ours)
    encoder = ZarrChunkEncoder(writer.potential_array, compressor="numcodecs")
    written = writer.write_objects(encoder.encode(volumes, 0))
    writer.mark_rendered(0, 3)
    reference = open_writer(zarrs)
    reference.write_volumes(0, volumes)
    reference.mark_rendered(0, 3)

    def objects(root):
        files = sorted(p for p in (tmp_path / root / "potential" / "c").rglob("*") if p.is_file())
        return {str(p.relative_to(tmp_path / root)): p.read_bytes() for p in files}

    assert objects("ours") == objects("zarr")
    assert written == sum(len(v) for v in objects("ours").values())
    assert not any(key.startswith("potential/c/2/") for key in objects("ours"))
    back = open_store(ours)["potential"].values
    assert np.array_equal(back.view(np.uint32), volumes.view(np.uint32))
    assert verify_store(ours).ok
    with pytest.raises(ValueError, match="not a shard key"):
        writer.write_objects({"c/0/0": b""})


def test_out_of_memory_batch_is_retried_smaller(tmp_path, monkeypatch):
    """A batch that runs out of device memory (the error injected as XLA raises it) is
    rendered again in halves; the store then equals one rendered without the error, the
    smaller size is kept for the worker's next task, and any other error still fails."""
    import jax

    from cryoensemble.distributed import plan_render, tasks
    from cryoensemble.sources import TrajectorySource
    from cryoensemble.store import open_store, prepare_store
    from helpers import DATA

    source = TrajectorySource(DATA / "adk.psf", DATA / "adk_dims.dcd")

    def planned(name, batch_size=4):
        plan = plan_render(source, shape=24, voxel_size=3.0, store=str(tmp_path / name),
                           batch_size=batch_size, n_workers=1)
        prepare_store(plan.store, plan.layout, plan.parameters, plan.source.labels(),
                      plan.attributes)
        return plan.spec

    def same_render(a, b):
        """Bit for bit on CPU; a GPU's scatter-adds run in no fixed order (last bits)."""
        if jax.devices()[0].platform == "cpu":
            assert np.array_equal(a, b)
        else:
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * np.abs(b).max())

    render = tasks._render_batch
    clean = planned("clean")
    tasks.worker_state().batch_limits.clear()
    tasks.render_conformations(source, clean, 0, 5)

    # The GPU workers' task path (encoded objects stored as they are, the next batch read
    # ahead), with host frames.
    def gpu_path():
        monkeypatch.setattr(tasks, "encodes_on_device", lambda: True)
        monkeypatch.setattr(tasks, "_device_encoder", lambda spec, writer, volumes: (
            ZarrChunkEncoder(writer.potential_array, compressor="numcodecs")))

    gpu_path()
    encoded = planned("encoded")
    result = tasks.render_conformations(source, encoded, 0, 5)
    # Frames cross to the host; checksums and shard indexes are added there.
    assert 0 < result["to_host_bytes"] < result["written_bytes"] < result["bytes"]
    assert tasks.worker_state().read_ahead is not None and result["read_s"] > 0
    same_render(open_store(encoded.store)["potential"].values,
                open_store(clean.store)["potential"].values)

    # A batch's objects are stored by the write-behind thread while the next renders: a
    # write that fails there fails the task, and nothing of the range is marked done.
    from cryoensemble.store import StoreWriter, done_conformations, open_writer

    failing = planned("failing")
    stored = StoreWriter.write_objects

    def disk_full(writer, objects):
        if any(key.startswith("c/4/") for key in objects):
            raise OSError(28, "No space left on device")
        return stored(writer, objects)

    monkeypatch.setattr(StoreWriter, "write_objects", disk_full)
    with pytest.raises(OSError, match="No space left"):
        tasks.render_conformations(source, failing, 0, 5)
    assert not done_conformations(failing.store, open_writer(failing.store).layout).any()

    # A failed write is never taken for the device running out of memory (which retries
    # the batch rendering, not the lost write): batches of 1 and 2, the first write's
    # error met while the third batch waits for room behind.
    def exhausted(writer, objects):
        if any(key.startswith("c/0/") for key in objects):
            raise RuntimeError("RESOURCE_EXHAUSTED: out of memory")
        return stored(writer, objects)

    monkeypatch.setattr(StoreWriter, "write_objects", exhausted)
    lost = planned("lost", batch_size=2)
    with pytest.raises(RuntimeError, match="RESOURCE_EXHAUSTED"):
        tasks.render_conformations(source, lost, 0, 5)
    assert not done_conformations(lost.store, open_writer(lost.store).layout).any()
    monkeypatch.undo()

    def oom_above_one(source, spec, positions):
        if positions.shape[0] > 1:
            raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate "
                               "4294967296 bytes.")
        return render(source, spec, positions)

    monkeypatch.setattr(tasks, "_render_batch", oom_above_one)
    for name in ("retried", "retried ahead"):  # also with batches read ahead
        if name == "retried ahead":
            gpu_path()
        retried = planned(name)
        result = tasks.render_conformations(source, retried, 0, 5)
        assert result["batch"] == 1 and result["retries"] == 2
        assert tasks.worker_state().batch_limits[(retried.shape, retried.renderer)] == 1
        same_render(open_store(retried.store)["potential"].values,
                    open_store(clean.store)["potential"].values)
        tasks.worker_state().batch_limits.clear()

    def broken(source, spec, positions):
        raise RuntimeError("INVALID_ARGUMENT: something else")

    monkeypatch.setattr(tasks, "_render_batch", broken)
    with pytest.raises(RuntimeError, match="INVALID_ARGUMENT"):
        tasks.render_conformations(source, planned("broken"), 0, 2)
    assert not tasks.is_device_out_of_memory(MemoryError("host"))


def test_planning_starts_no_jax_backend(tmp_path):
    """The client plans a render without starting a JAX backend: on a GPU machine one would
    take most of the GPU's memory from the workers. With `JAX_PLATFORMS=tpu` (absent
    here) any backend start fails, so a plan that completes started none."""
    import os
    import subprocess
    import sys

    from conftest import DATA

    code = (
        "from cryoensemble.sources import StructureFilesSource;"
        "from cryoensemble.distributed import plan_render;"
        f"plan = plan_render(StructureFilesSource([{str(DATA / 'adk_closed.pdb')!r}]), shape=(48,) * 3,"
        f" voxel_size=1.5, store={str(tmp_path / 'p.zarr')!r});"
        "print(plan.n_conformations)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=dict(os.environ, JAX_PLATFORMS="tpu"), timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "1"
    # The same check is live: starting a backend under this setting fails.
    failing = subprocess.run([sys.executable, "-c", "import jax; jax.numpy.zeros(1)"],
                             capture_output=True, env=dict(os.environ, JAX_PLATFORMS="tpu"),
                             timeout=300)
    assert failing.returncode != 0


def test_tasks_smaller_than_the_batch_store_only_their_conformations_without_compiling(
        tmp_path, monkeypatch):
    """A plan's last task can be smaller than its batch; on the GPU task path such tasks
    render padded to the batch and compress only their own volumes: the
    store equals a plain render of the same conformations, the padding is neither stored
    nor marked, and no task size cuts chunks of a new shape (an XLA compile each)."""
    from cryoensemble.distributed import _device_codec, plan_render, tasks
    from cryoensemble.sources import TrajectorySource
    from cryoensemble.store import done_conformations, open_store, prepare_store
    from helpers import DATA

    source = TrajectorySource(DATA / "adk.psf", DATA / "adk_dims.dcd")

    def planned(name):
        plan = plan_render(source, shape=24, voxel_size=3.0, store=str(tmp_path / name),
                           batch_size=4, n_workers=1)
        prepare_store(plan.store, plan.layout, plan.parameters, plan.source.labels(),
                      plan.attributes)
        return plan

    clean = planned("clean")
    tasks.render_conformations(source, clean.spec, 0, 7)
    monkeypatch.setattr(tasks, "encodes_on_device", lambda: True)
    monkeypatch.setattr(tasks, "_device_encoder", lambda spec, writer, volumes: (
        ZarrChunkEncoder(writer.potential_array, compressor="numcodecs")))
    encoded = planned("encoded")
    tasks.render_conformations(source, encoded.spec, 0, 4)
    shapes = _device_codec._to_chunks._cache_size()
    for a, b in [(4, 6), (6, 7)]:
        tasks.render_conformations(source, encoded.spec, a, b)
    assert _device_codec._to_chunks._cache_size() == shapes
    done = done_conformations(encoded.store, encoded.layout)
    assert done[:7].all() and not done[7:].any()
    stored = {p.relative_to(tmp_path / "encoded").parts[2]
              for p in (tmp_path / "encoded" / "potential" / "c").rglob("*") if p.is_file()}
    assert stored == {str(i) for i in range(7)}
    ours = open_store(encoded.store)["potential"].values[:7]
    theirs = open_store(clean.store)["potential"].values[:7]
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6 * np.abs(theirs).max())
