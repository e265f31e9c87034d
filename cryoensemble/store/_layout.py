"""How `potential` is cut into objects: one zarr v3 shard per conformation (or per z-slab),
inner chunks that leave empty space unwritten, each chunk zstd-compressed and checksummed."""

import dataclasses

import numpy as np


POTENTIAL = "potential"
IMAGES = "images"
RENDERED = "rendered"
# Bookkeeping arrays live in a subgroup, which xarray's view of the root group leaves out.
BOOKKEEPING = "bookkeeping"
EMPTY_SHARD = f"{BOOKKEEPING}/empty_shard"

# A shard (one object) holds at most this much raw data; larger grids get z-slab shards.
_MAX_SHARD_BYTES = 256 * 2**20
# Inner chunks: an axis of at most `_ONE_CHUNK` voxels stays whole, so a small grid's shard
# is one compressed frame (zarr's and nvCOMP's cost per chunk would exceed what empty space
# saves there); a longer axis is cut into chunks of at most `_MAX_INNER` voxels, so that the
# empty space around a molecule in a large box is neither compressed (on the host or the
# device) nor stored.
_ONE_CHUNK = 128
_MAX_INNER = 64


@dataclasses.dataclass(frozen=True)
class StoreLayout:
    """Shape, dtype and cutting of a store's `potential` array.

    **Arguments:**

    - `n_conformations`, `shape` (NZ, NY, NX), `dtype` ("float32" or "float16").
    - `z_chunk`: z-planes per shard (one object): the whole grid, or a z-slab of it.
    """

    n_conformations: int
    shape: tuple[int, int, int]
    dtype: str
    z_chunk: int

    # What the generic store code needs of any layout (see `ImageStackLayout`): the data
    # array, the units a marker stands for, the shards of one unit, the identity format.
    array = POTENTIAL
    unit_dim = "conformation"
    format = "cryoensemble-potential-store"

    @property
    def n_units(self) -> int:
        """Units of work (one `rendered` marker each): the conformations."""
        return self.n_conformations

    @property
    def shards_per_unit(self) -> int:
        return self.n_z_chunks

    @property
    def shards(self) -> tuple[int, int, int, int]:
        """The shard (object) shape: one conformation, `z_chunk` planes."""
        return (1, self.z_chunk, self.shape[1], self.shape[2])

    @property
    def chunks(self) -> tuple[int, int, int, int]:
        """The inner (compressed, checksummed) chunk shape; it divides the shard."""
        return (1,) + tuple(n if n <= _ONE_CHUNK else _divisor_at_most(n, _MAX_INNER)
                            for n in self.shards[1:])

    @property
    def n_z_chunks(self) -> int:
        """Shards per conformation."""
        return -(-self.shape[0] // self.z_chunk)

    def shard_ranges(self, z0: int, z1: int) -> list[tuple[int, int, int]]:
        """`(shard index, first plane, stop plane)` of the shards planes [z0, z1) cover."""
        return [(s, s * self.z_chunk, min(self.shape[0], (s + 1) * self.z_chunk))
                for s in range(z0 // self.z_chunk, -(-z1 // self.z_chunk))]

    def encoding(self) -> dict:
        """xarray/zarr encoding of the arrays (zarr v3): bytes -> zstd -> crc32c inside
        each shard, the shard index checksummed too (zarr's default index codecs)."""
        from zarr.codecs import Crc32cCodec, ZstdCodec

        # zstd level 1 on rendered potentials: as small as blosc(zstd, byte shuffle) and
        # the frame format nvCOMP writes on the GPU, so either path makes the same store.
        return {
            # Fill value 0, so all-zero inner chunks (empty space) are not stored; xarray
            # must not read zeros as missing (no _FillValue).
            POTENTIAL: {"chunks": self.chunks, "shards": self.shards, "fill_value": 0.0,
                        "_FillValue": None, "compressors": (ZstdCodec(level=1), Crc32cCodec())},
            RENDERED: {"chunks": (1,)},
        }


def _divisor_at_most(n: int, limit: int) -> int:
    """The largest divisor of n in [16, limit], else n (zarr needs inner chunks that
    divide the shard; a prime-sized axis stays one chunk)."""
    if n <= limit:
        return n
    for d in range(limit, 15, -1):
        if n % d == 0:
            return d
    return n


def choose_z_chunk(shape, dtype: str, z_slabs: int = 1) -> int:
    """Planes per shard: the slab size when split into slabs, else the whole grid up to
    `_MAX_SHARD_BYTES` per object."""
    nz, ny, nx = shape
    if z_slabs > 1:
        return -(-nz // z_slabs)
    plane = ny * nx * np.dtype(dtype).itemsize
    return max(1, min(nz, _MAX_SHARD_BYTES // plane))


@dataclasses.dataclass(frozen=True)
class ImageStackLayout:
    """Shape, dtype and cutting of a particle store's `images` array: `images (particle,
    y, x)`, one shard (object) per chunk of `images_per_chunk` particles, one inner chunk
    (crc32c-checksummed) per image; `noise_sigma (particle,)` chunked alike; one `rendered`
    marker per chunk.

    **Arguments:**

    - `n_images`, `shape` (NY, NX), `dtype` ("float32" or "float16"), `images_per_chunk`.
    """

    n_images: int
    shape: tuple[int, int]
    dtype: str
    images_per_chunk: int

    array = IMAGES
    unit_dim = "chunk"
    format = "cryoensemble-particle-store"
    shards_per_unit = 1

    @property
    def n_units(self) -> int:
        """Chunks of particles (one `rendered` marker and one shard each)."""
        return -(-self.n_images // self.images_per_chunk)

    @property
    def shards(self) -> tuple[int, int, int]:
        return (self.images_per_chunk,) + tuple(self.shape)

    @property
    def chunks(self) -> tuple[int, int, int]:
        return (1,) + tuple(self.shape)

    def unit_range(self, unit: int) -> tuple[int, int]:
        """Particles [start, stop) of a chunk."""
        start = unit * self.images_per_chunk
        return start, min(self.n_images, start + self.images_per_chunk)

    def encoding(self) -> dict:
        """As `StoreLayout.encoding`; `noise_sigma` checksummed per chunk too."""
        from zarr.codecs import Crc32cCodec

        return {
            # Checksums without compression: noisy images do not compress.
            IMAGES: {"chunks": self.chunks, "shards": self.shards, "fill_value": 0.0,
                     "_FillValue": None, "compressors": (Crc32cCodec(),)},
            "noise_sigma": {"chunks": (self.images_per_chunk,), "_FillValue": None,
                            "compressors": (Crc32cCodec(),)},
            RENDERED: {"chunks": (1,)},
        }

    @classmethod
    def from_parameters(cls, parameters: dict) -> "ImageStackLayout":
        return cls(int(parameters["n_images"]), tuple(parameters["shape"]), parameters["dtype"],
                   int(parameters["images_per_chunk"]))


def layout_from_parameters(parameters: dict, format: str | None = None):
    """The layout a store's parameters (and identity format) describe."""
    if format == ImageStackLayout.format or "images_per_chunk" in parameters:
        return ImageStackLayout.from_parameters(parameters)
    return StoreLayout(int(parameters["n_conformations"]), tuple(parameters["shape"]),
                       parameters["dtype"], int(parameters["z_chunk"]))
