"""Encode rendered volumes into zarr chunk objects on the GPU (nvCOMP batched zstd).

A batch of volumes that is already on the device is cut into the zarr array's (inner)
chunks there, every non-empty chunk is compressed in one batched nvCOMP zstd call (raw
bitstream: standard zstd frames), and only the compressed bytes are copied to the host.
The host appends zarr's `crc32c` checksum and, for a sharded array, the shard index, so
each returned object is exactly what zarr itself stores for codecs
`[bytes(little), zstd, crc32c]` (optionally inside `sharding_indexed` with index codecs
`[bytes(little), crc32c]` at the end): any CPU reader decodes it with zarr's own codec
pipeline. The frames differ from a CPU zstd's (another encoder), the format does not.

The same encoder runs without a GPU (`compressor="numcodecs"`): frames from numcodecs'
zstd at the array's level, then byte-identical to zarr's own writes; that is the CPU
fallback and what the CPU tests check the layout against.

Device memory: nvCOMP's output and scratch buffers are taken from JAX's own memory pool
(`nvcomp.set_device_allocator`), so one bound (`XLA_PYTHON_CLIENT_MEM_FRACTION`) covers
everything a worker holds, and a batch too large for it fails with XLA's recoverable
RESOURCE_EXHAUSTED (the caller retries smaller) instead of a CUDA error outside the pool.
nvCOMP runs on a stream of the encoder's own; the host waits for it by polling an event
(a blocking wait spins a core). nvCOMP's time per call has a floor that larger batches
amortise (see benchmarks/device_codec.py).
"""

from __future__ import annotations

import ctypes
import functools
import time
import weakref
from typing import Literal, final

import jax
import jax.numpy as jnp
import numpy as np


def device_codec_available() -> bool:
    """Whether nvCOMP's Python package is importable and JAX has a CUDA device, i.e.
    whether `ZarrChunkEncoder(..., compressor="nvcomp")` can run here."""
    try:
        if not jax.devices("gpu"):
            return False
        from nvidia import nvcomp  # noqa: F401
    except (ImportError, RuntimeError):
        return False
    return True


def wait_until_ready(array: jax.Array) -> None:
    """Until the device has computed `array`, sleeping between polls: JAX's
    `block_until_ready` spins a host core for the whole wait, and several worker
    processes share one GPU, so each mostly waits for the others' work."""
    pause = 5e-5
    while not array.is_ready():
        time.sleep(pause)
        pause = min(2 * pause, 1e-3)


def _crc32c(data) -> bytes:
    """zarr's `crc32c` codec suffix: the CRC-32C of `data`, 4 bytes little-endian."""
    import google_crc32c

    return np.uint32(google_crc32c.value(data)).astype("<u4").tobytes()


def _cuda(result):
    """The value of a `cuda.bindings.runtime` call, or its error raised."""
    from cuda.bindings import runtime

    error, *value = result
    if error != runtime.cudaError_t.cudaSuccess:
        raise RuntimeError(f"ZarrChunkEncoder: CUDA runtime error {error!r}")
    return value[0] if value else None


class _DeviceBytes:
    """A zero-copy byte view of device memory, for nvCOMP (keeps its owner alive)."""

    def __init__(self, pointer: int, nbytes: int, owner):
        self.owner = owner
        self.__cuda_array_interface__ = {
            "shape": (nbytes,),
            "typestr": "|u1",
            "data": (pointer, False),
            "strides": None,
            "version": 3,
        }


def _layout(array) -> tuple[tuple[int, ...], tuple[int, ...], int | None, object, bool]:
    """(shard shape, inner chunk shape, zstd level, fill value, sharded) of a 4-d zarr v3 array
    `(n, z, y, x)` whose chunks hold one conformation and whose codecs are
    `[bytes, zstd, crc32c]`, plain or inside sharding; a clear error otherwise."""
    from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec, ZstdCodec

    name = f"zarr array {array.path or array.store_path!s}"
    metadata = array.metadata
    if getattr(metadata, "zarr_format", None) != 3:
        raise ValueError(f"ZarrChunkEncoder: {name} is not zarr v3")
    if len(array.shape) != 4:
        raise ValueError(f"ZarrChunkEncoder: {name} has shape {array.shape}; need (n, z, y, x)")

    def plain_chain(codecs, what) -> int:
        ok = (
            len(codecs) == 3
            and isinstance(codecs[0], BytesCodec)
            and (codecs[0].endian is None or codecs[0].endian.value == "little")
            and isinstance(codecs[1], ZstdCodec)
            and not codecs[1].checksum
            and isinstance(codecs[2], Crc32cCodec)
        )
        if not ok:
            raise ValueError(
                f"ZarrChunkEncoder: {name} {what} codecs are {[c.to_dict() for c in codecs]}; "
                "need [bytes(little), zstd(checksum=false), crc32c]"
            )
        return codecs[1].level

    codecs = tuple(metadata.codecs)
    outer = tuple(array.shards or array.chunks)
    if len(codecs) == 1 and isinstance(codecs[0], ShardingCodec):
        sharding = codecs[0]
        index = tuple(sharding.index_codecs)
        if (
            sharding.index_location.value != "end"
            or len(index) != 2
            or not isinstance(index[0], BytesCodec)
            or not isinstance(index[1], Crc32cCodec)
        ):
            raise ValueError(
                f"ZarrChunkEncoder: {name} shard index must be [bytes, crc32c] at the end; "
                f"got {sharding.to_dict()}"
            )
        level = plain_chain(tuple(sharding.codecs), "inner-chunk")
        inner = tuple(sharding.chunk_shape)
        sharded = True
    else:
        level = plain_chain(codecs, "chunk")
        inner = outer
        sharded = False
    if outer[0] != 1 or inner[0] != 1:
        raise ValueError(
            f"ZarrChunkEncoder: {name} chunks {outer} / inner chunks {inner} must hold one "
            "conformation (first axis 1)"
        )
    return outer[1:], inner[1:], level, metadata.fill_value, sharded


def _padded_blocks(volumes, shard, inner, fill):
    """(b, z, y, x) -> (b, n_chunks, chunk_size): inner chunks in C order over the chunk
    grid, padded with `fill` to whole shards as zarr does."""
    b, *shape = volumes.shape
    grid = [-(-n // s) * s for n, s in zip(shape, shard)]
    padded = jnp.pad(
        volumes, [(0, 0)] + [(0, g - n) for g, n in zip(grid, shape)], constant_values=fill
    )
    (gz, gy, gx), (cz, cy, cx) = [g // c for g, c in zip(grid, inner)], inner
    blocks = padded.reshape(b, gz, cz, gy, cy, gx, cx).transpose(0, 1, 3, 5, 2, 4, 6)
    return blocks.reshape(b, gz * gy * gx, cz * cy * cx)


@functools.partial(jax.jit, static_argnames=("shard", "inner", "fill", "rearrange"))
def _to_chunks(volumes, shard, inner, fill, rearrange):
    """(chunks, (b, n_chunks) all-fill mask); the chunks are `volumes` itself where they
    already lie contiguous in it (`rearrange` False), else rearranged by `_padded_blocks`."""
    blocks = _padded_blocks(volumes, shard, inner, fill)
    if jnp.issubdtype(blocks.dtype, jnp.floating) and fill == 0:
        # zarr compares bit patterns against a zero fill: a chunk of -0.0 is stored.
        unsigned = {2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint64}[blocks.dtype.itemsize]
        empty = jnp.all(jax.lax.bitcast_convert_type(blocks, unsigned) == 0, axis=-1)
    elif jnp.issubdtype(blocks.dtype, jnp.floating) and np.isnan(fill):
        empty = jnp.all(jnp.isnan(blocks), axis=-1)
    else:
        empty = jnp.all(blocks == fill, axis=-1)
    return (blocks if rearrange else None), empty


def _pool_size(nbytes: int) -> int:
    """`nbytes` rounded up to one of 8 sizes per power of two (a bounded set of buffer
    shapes: each is one small XLA computation, compiled once)."""
    if nbytes <= 4096:
        return 4096
    step = 1 << max(0, int(nbytes - 1).bit_length() - 4)
    return -(-nbytes // step) * step


class _PoolBuffer:
    """One nvCOMP device allocation: a uint8 JAX array (its memory belongs to JAX's pool).
    When nvCOMP lets go of it, the array is parked until the encoder's stream is known
    idle, so JAX cannot hand the memory to a computation while nvCOMP may still use it."""

    def __init__(self, array: jax.Array, released: list):
        self._array, self._released = array, released
        self.ptr = array.unsafe_buffer_pointer()

    def __del__(self):
        self._released.append(self._array)


class _JaxPoolAllocator:
    """nvCOMP's device allocator (`nvcomp.set_device_allocator`) drawing on JAX's pool of
    `device`; remembers whether an allocation ran out of memory."""

    def __init__(self, device):
        self.device = device
        self.released: list = []
        self.out_of_memory = False

    def __call__(self, nbytes: int, stream) -> _PoolBuffer:
        try:
            array = jnp.zeros((_pool_size(int(nbytes)),), jnp.uint8, device=self.device)
            array.block_until_ready()  # zeroed on JAX's stream before nvCOMP's writes
        except Exception as error:
            if "RESOURCE_EXHAUSTED" in str(error) or "out of memory" in str(error).lower():
                self.out_of_memory = True
            raise
        return _PoolBuffer(array, self.released)


class _NvcompSession:
    """An nvCOMP zstd codec on a non-blocking CUDA stream of its own (and an event on
    it), drawing device memory from JAX's pool. Torn down in order: the codec (which
    frees its buffers on the stream) before the stream."""

    def __init__(self, device):
        from cuda.bindings import runtime
        from nvidia import nvcomp

        stream = _cuda(runtime.cudaStreamCreateWithFlags(runtime.cudaStreamNonBlocking))
        event = _cuda(runtime.cudaEventCreateWithFlags(runtime.cudaEventDisableTiming))
        self.stream_and_event = (stream, event)
        self.allocator = _JaxPoolAllocator(device)
        nvcomp.set_device_allocator(self.allocator)
        self.codec = nvcomp.Codec(
            algorithm="Zstd",
            bitstream_kind=nvcomp.BitstreamKind.RAW,
            device_id=device.local_hardware_id,
            cuda_stream=int(stream),
        )

    def __del__(self):
        try:
            from cuda.bindings import runtime
        except ImportError:  # interpreter shutdown
            return
        stream, event = self.stream_and_event
        self.codec = None
        runtime.cudaStreamSynchronize(stream)
        self.allocator.released.clear()
        runtime.cudaEventDestroy(event)
        runtime.cudaStreamDestroy(stream)


@final
class ZarrChunkEncoder:
    """Encodes batches of volumes into the stored objects of one zarr v3 array.

    The array is `(n, z, y, x)` with one conformation per chunk (or per shard), codecs
    `[bytes(little), zstd, crc32c]`, plain or as the inner codecs of `sharding_indexed`
    (index `[bytes(little), crc32c]` at the end, as zarr's default). One encoder holds one
    nvCOMP codec and one pinned staging buffer: use it from one thread at a time, for
    volumes on one device.

    **Arguments:**

    - `array`: the `zarr.Array` (its metadata only is read).
    - `compressor`: `"nvcomp"` (zstd on the GPU, the batch must be on a CUDA device),
      `"numcodecs"` (zstd on the host: byte-identical to zarr's own writes) or `"auto"`
      (nvcomp where `device_codec_available()`).
    - `write_empty_chunks`: store chunks that hold only the fill value (zarr's array
      option of the same name); False leaves them out, as zarr does by default.
    """

    def __init__(
        self,
        array,
        *,
        compressor: Literal["auto", "nvcomp", "numcodecs"] = "auto",
        write_empty_chunks: bool = False,
    ):
        if compressor not in ("auto", "nvcomp", "numcodecs"):
            raise ValueError(
                f"ZarrChunkEncoder: compressor must be 'auto', 'nvcomp' or 'numcodecs'; "
                f"got {compressor!r}"
            )
        if compressor == "auto":
            compressor = "nvcomp" if device_codec_available() else "numcodecs"
        elif compressor == "nvcomp" and not device_codec_available():
            raise RuntimeError(
                "ZarrChunkEncoder: compressor='nvcomp' needs a CUDA device for JAX and the "
                "nvidia-nvcomp package (pip install nvidia-nvcomp-cu13)"
            )
        self.shard_shape, self.chunk_shape, self.level, self.fill_value, self.sharded = (
            _layout(array))
        for s, c in zip(self.shard_shape, self.chunk_shape):
            if s % c:
                raise ValueError(
                    f"ZarrChunkEncoder: shard shape {self.shard_shape} is not a multiple of "
                    f"the inner chunks {self.chunk_shape}"
                )
        self.volume_shape = tuple(int(n) for n in array.shape[1:])
        self.dtype = np.dtype(array.dtype)
        self._contiguous = (
            self.chunk_shape[1:] == self.volume_shape[1:]
            and self.shard_shape[1:] == self.volume_shape[1:]
            and self.volume_shape[0] % self.shard_shape[0] == 0
        )
        self.compressor = compressor
        self.write_empty_chunks = bool(write_empty_chunks)
        self._encode_key = array.metadata.encode_chunk_key
        # The codec, its stream and allocator, made on first use; referenced only here, so
        # that the session tears them down in order.
        self._session = None
        self._pinned = None
        # Chunk bookkeeping, once per array: the shards' grid, each shard's inner chunks
        # in zarr's (Morton) write order as indices into the C-ordered chunk grid.
        from zarr.core.indexing import morton_order_iter

        self._shards = [-(-n // s) for n, s in zip(self.volume_shape, self.shard_shape)]
        self._per_shard = tuple(s // c for s, c in zip(self.shard_shape, self.chunk_shape))
        chunk_grid = [g * p for g, p in zip(self._shards, self._per_shard)]
        morton = list(morton_order_iter(self._per_shard))
        self._members = {}
        for shard in np.ndindex(*self._shards):
            self._members[shard] = [
                (inner, int(np.ravel_multi_index(
                    [s * p + i for s, p, i in zip(shard, self._per_shard, inner)], chunk_grid)))
                for inner in morton
            ]

    # -- the stages of `encode` (separate so that each can be timed) ----------------------
    def chunks(self, volumes) -> tuple[jax.Array, np.ndarray]:
        """On the volumes' device, an array whose bytes are the `b * n_chunks` inner chunks
        one after the other (C order over the padded chunk grid, volume by volume), and on
        the host which of them to compress (not all fill value, or all with
        `write_empty_chunks`)."""
        if volumes.ndim != 4 or tuple(volumes.shape[1:]) != self.volume_shape:
            raise ValueError(
                f"ZarrChunkEncoder.encode: volumes have shape {tuple(volumes.shape)}; the array "
                f"holds (b, *{self.volume_shape})"
            )
        if np.dtype(volumes.dtype) != self.dtype:
            raise ValueError(
                f"ZarrChunkEncoder.encode: volumes are {np.dtype(volumes.dtype)}, the array is "
                f"{self.dtype}"
            )
        if not isinstance(volumes, jax.Array):
            volumes = jnp.asarray(volumes)
        return self._cut(volumes, not self._contiguous)

    def _cut(self, volumes: jax.Array, rearrange: bool) -> tuple[jax.Array, np.ndarray]:
        """`chunks` of arrays already checked: the chunks on the device (`volumes` itself
        where they lie contiguous in it: no copy) and which of them to compress."""
        fill = np.asarray(self.fill_value, self.dtype).item()
        blocks, empty = _to_chunks(volumes, self.shard_shape, self.chunk_shape, fill, rearrange)
        blocks = volumes if blocks is None else blocks
        wait_until_ready(empty)
        keep = ~np.asarray(empty).reshape(-1)
        if self.write_empty_chunks:
            keep[:] = True
        return blocks, keep

    def compress(self, blocks: jax.Array, keep: np.ndarray) -> list:
        """zstd frames of the kept rows of `blocks`: nvCOMP arrays still on the device
        (compression finished), or host bytes for `compressor="numcodecs"`."""
        rows = np.flatnonzero(keep)
        if len(rows) == 0:
            return []
        if self.compressor == "numcodecs":
            from numcodecs import Zstd

            codec = Zstd(level=self.level)
            host = np.asarray(blocks).reshape(len(keep), -1)
            return [codec.encode(host[r]) for r in rows]
        from nvidia import nvcomp

        if self._session is None:
            self._session = _NvcompSession(next(iter(blocks.devices())))
        session = self._session
        wait_until_ready(blocks)  # nvCOMP reads on its own stream
        pointer = blocks.__cuda_array_interface__["data"][0]
        row_bytes = blocks.nbytes // len(keep)
        views = [_DeviceBytes(pointer + int(r) * row_bytes, row_bytes, blocks) for r in rows]
        nvcomp.set_device_allocator(session.allocator)
        frames = None
        try:
            frames = session.codec.encode(nvcomp.as_arrays(views))
            self._wait()
        except Exception as error:
            if session.allocator.out_of_memory:
                # Whatever nvCOMP still holds goes back to the pool before a smaller retry.
                del session, frames
                self._session = None
                raise RuntimeError(
                    f"RESOURCE_EXHAUSTED: nvCOMP's buffers for {len(rows)} chunks of "
                    f"{row_bytes} bytes do not fit this worker's device memory pool"
                ) from error
            raise
        for frame in frames:  # known now: the stream is done
            frame.buffer_size
        return list(frames)

    def _wait(self) -> None:
        """Until the encoder's stream is idle, sleeping between polls (no spinning core);
        then the buffers nvCOMP released go back to JAX's pool."""
        from cuda.bindings import runtime

        stream, event = self._session.stream_and_event
        _cuda(runtime.cudaEventRecord(event, stream))
        pause = 5e-5
        while True:
            (status,) = runtime.cudaEventQuery(event)
            if status == runtime.cudaError_t.cudaSuccess:
                break
            if status != runtime.cudaError_t.cudaErrorNotReady:
                raise RuntimeError(f"ZarrChunkEncoder: CUDA runtime error {status!r}")
            time.sleep(pause)
            pause = min(2 * pause, 1e-3)
        self._session.allocator.released.clear()

    def fetch(self, frames: list) -> list[np.ndarray]:
        """The frames on the host. Only the compressed bytes cross, into one pinned
        staging buffer that the encoder keeps: the views are valid until its next fetch."""
        if self.compressor == "numcodecs":
            return [np.frombuffer(frame, np.uint8) for frame in frames]
        from cuda.bindings import runtime

        sizes = [frame.buffer_size for frame in frames]
        staging = self._staging(sum(sizes))
        target, offsets = staging.ctypes.data, np.cumsum([0] + sizes).tolist()
        stream = self._session.stream_and_event[0]
        for frame, offset, size in zip(frames, offsets, sizes):
            source = frame.__cuda_array_interface__["data"][0]
            _cuda(runtime.cudaMemcpyAsync(
                target + offset, source, size, runtime.cudaMemcpyKind.cudaMemcpyDeviceToHost,
                stream,
            ))
        self._wait()
        return [staging[offset : offset + size] for offset, size in zip(offsets, sizes)]

    def _staging(self, nbytes: int) -> np.ndarray:
        """At least `nbytes` of page-locked host memory, grown by doubling, freed with the
        encoder (fresh pageable buffers per batch cost page faults: system time)."""
        if self._pinned is None or self._pinned[0].size < nbytes:
            from cuda.bindings import runtime

            if self._pinned is not None:
                self._pinned[1]()  # free the old buffer now
            size = max(nbytes, 2 * (0 if self._pinned is None else self._pinned[0].size), 1 << 20)
            pointer = _cuda(runtime.cudaMallocHost(size))
            buffer = (ctypes.c_uint8 * size).from_address(pointer)
            self._pinned = (
                np.frombuffer(buffer, np.uint8),
                weakref.finalize(self, runtime.cudaFreeHost, pointer),
            )
        return self._pinned[0]

    def assemble(self, payload: list, keep: np.ndarray, start: int) -> dict[str, bytes | None]:
        """The stored objects from the frames of the kept chunks (crc32c, shard index),
        each built with one copy of its bytes."""
        n_chunks = len(self._members) * int(np.prod(self._per_shard))
        frames = self._frames(payload, keep)
        out: dict[str, bytes | None] = {}
        for i in range(len(keep) // n_chunks):
            base = i * n_chunks
            for shard, members in self._members.items():
                out[self._encode_key((start + i, *shard))] = self._object(frames, base, members)
        return out

    @staticmethod
    def _frames(payload: list, keep: np.ndarray) -> list:
        frames: list = [None] * len(keep)
        for row, frame in zip(np.flatnonzero(keep).tolist(), payload):
            frames[row] = frame
        return frames

    def _object(self, frames: list, base: int, members) -> bytes | None:
        """One stored object from the frames of its chunks (rows `base + index`)."""
        if not self.sharded:
            frame = frames[base + members[0][1]]
            return None if frame is None else b"".join((frame, _crc32c(frame)))
        return self._shard([(inner, frames[base + index]) for inner, index in members])

    def encode_slab(self, slab, conformation: int, z_start: int) -> dict[str, bytes | None]:
        """The stored object of one z-slab shard of a conformation: `slab` `(1, z, y, x)`
        holds exactly the planes `[z_start, z_start + z)` of one shard (the grid's last
        shard may be shorter; zarr pads it with the fill value). For arrays whose shards
        span whole planes (the slab layouts); returns `{key: bytes or None}` as `encode`."""
        height = self.shard_shape[0]
        stop = min(self.volume_shape[0], z_start + height)
        if (self.shard_shape[1:] != self.volume_shape[1:] or z_start % height
                or tuple(slab.shape) != (1, stop - z_start, *self.volume_shape[1:])):
            raise ValueError(
                f"ZarrChunkEncoder.encode_slab: a slab {tuple(slab.shape)} at plane {z_start} is "
                f"not one shard {self.shard_shape} of the volume {self.volume_shape}"
            )
        if not isinstance(slab, jax.Array):
            slab = jnp.asarray(slab)
        fill = np.asarray(self.fill_value, self.dtype).item()
        if stop - z_start < height:
            slab = jnp.pad(slab, [(0, 0), (0, height - (stop - z_start)), (0, 0), (0, 0)],
                           constant_values=fill)
        blocks, keep = self._cut(slab, self.chunk_shape[1:] != self.shard_shape[1:])
        frames = self._frames(self.fetch(self.compress(blocks, keep)), keep)
        # The first shard's members: the shard grid is one shard across y and x, so its
        # chunks' indices are the same in a one-shard volume.
        members = self._members[(0,) * len(self._shards)]
        key = self._encode_key((conformation, z_start // height, 0, 0))
        return {key: self._object(frames, 0, members)}

    def encode(self, volumes, start: int) -> dict[str, bytes | None]:
        """The stored objects of conformations `[start, start + b)`.

        **Arguments:**

        - `volumes`: `(b, z, y, x)` JAX array of the array's dtype and volume shape (on
          the GPU for `compressor="nvcomp"`).
        - `start`: the index of `volumes[0]` along the array's first axis.

        **Returns:** `{chunk key relative to the array: bytes}`; None for an object that
        holds only the fill value (to be deleted or left unwritten). Write each with
        `store.set(f"{array.path}/{key}", zarr.core.buffer.cpu.Buffer.from_bytes(value))`.
        """
        blocks, keep = self.chunks(volumes)
        return self.assemble(self.fetch(self.compress(blocks, keep)), keep, start)

    def _shard(self, members) -> bytes | None:
        """A `sharding_indexed` object: the inner chunks (zstd + crc32c) in zarr's order,
        then the index `(offset, nbytes)` uint64 per inner chunk, C order, with crc32c."""
        index = np.full((*self._per_shard, 2), np.iinfo(np.uint64).max, dtype="<u8")
        parts, offset = [], 0
        for inner, frame in members:
            if frame is None:
                continue
            index[inner] = (offset, len(frame) + 4)
            parts += [frame, _crc32c(frame)]
            offset += len(frame) + 4
        if not parts:
            return None
        index_bytes = index.tobytes()
        return b"".join(parts + [index_bytes, _crc32c(index_bytes)])

    def __repr__(self) -> str:
        return (
            f"ZarrChunkEncoder(volume {self.volume_shape}, shards {self.shard_shape}, "
            f"chunks {self.chunk_shape}, zstd level {self.level}, {self.compressor})"
        )
