"""nvCOMP's batched zstd on one GPU: time and device buffers against the batch and the
size of the pieces it compresses (what sizes `ZarrChunkEncoder`'s batches).

Synthetic smooth volumes with empty margins and 1% noise (they compress to ~63%, far
less than real potentials, so this is a lower bound of the speed). nvCOMP's buffers are
drawn from JAX's pool through the encoder's allocator and counted.

    python benchmarks/nvcomp_buffers.py          # needs a CUDA device and nvidia-nvcomp
"""
import time
import numpy as np, jax, jax.numpy as jnp
from nvidia import nvcomp

from cryoensemble.distributed import _device_codec as dc

dev = jax.devices()[0]
class Tracking(dc._JaxPoolAllocator):
    live = 0; peak = 0; calls = 0
    def __call__(self, nbytes, stream):
        buf = super().__call__(nbytes, stream)
        n = dc._pool_size(int(nbytes)); Tracking.live += n; Tracking.calls += 1
        Tracking.peak = max(Tracking.peak, Tracking.live)
        import weakref
        weakref.finalize(buf, Tracking._free, n)
        return buf
    @staticmethod
    def _free(n): Tracking.live -= n

rng = np.random.default_rng(0)
def volumes(edge, n):
    # smooth blobs with empty space, like potentials
    g = np.linspace(-1, 1, edge, dtype=np.float32)
    z, y, x = np.meshgrid(g, g, g, indexing="ij")
    base = np.exp(-((x**2 + y**2 + z**2) / 0.2)) * (1 + 0.01 * rng.standard_normal((edge,)*3).astype(np.float32))
    base[np.abs(x) > 0.7] = 0
    return jnp.asarray(np.broadcast_to(base, (n, edge, edge, edge)).copy())

for edge, n in ((96, 64), (96, 256), (128, 128), (256, 16), (256, 32)):
    v = volumes(edge, n); v.block_until_ready()
    for piece in (32**3*4, 48**3*4 if edge % 48 == 0 else 64**3*4, 64**3*4, 128**3*4):
        row_all = v.nbytes // n
        if piece > row_all: continue
        alloc = Tracking(dev); Tracking.live = Tracking.peak = Tracking.calls = 0
        nvcomp.set_device_allocator(alloc)
        try:
            codec = nvcomp.Codec(algorithm="Zstd", bitstream_kind=nvcomp.BitstreamKind.RAW,
                                 device_id=dev.local_hardware_id)
            ptr = v.__cuda_array_interface__["data"][0]
            k = v.nbytes // piece
            views = [dc._DeviceBytes(ptr + i * piece, piece, v) for i in range(k)]
            times = []
            for r in range(3):
                t = time.perf_counter()
                frames = codec.encode(nvcomp.as_arrays(views))
                sizes = [f.buffer_size for f in frames]
                times.append(time.perf_counter() - t)
                del frames
            t = min(times[1:])
            print(f"{edge}^3 x{n} pieces of {piece>>10} KiB ({k}): {t*1e3:7.1f} ms {n/t:7.0f} vol/s, "
                  f"ratio {sum(sizes)/v.nbytes:.4f}, peak nvCOMP {Tracking.peak/2**30:.2f} GiB "
                  f"({Tracking.peak/v.nbytes:.1f}x raw)", flush=True)
            del codec
        except Exception as e:
            print(f"{edge}^3 piece {piece}: {type(e).__name__}: {str(e)[:200]}", flush=True)
    del v
