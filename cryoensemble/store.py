"""The volume store: an xarray Dataset in a zarr (format 3) store on disk.

Layout: `potential` (conformation, z, y, x), A^-2, float32 or float16, zstd-compressed (blosc),
one conformation per chunk (sub-chunked in z for large grids or slab-split renders);
`z/y/x` coordinates in A at voxel centres; per-conformation coordinates from the source;
`rendered` (conformation,) uint8, one chunk per conformation, written only after all of
that conformation's data, so a conformation is done exactly when its marker and all its
data chunks exist. Attributes hold everything needed to reproduce the stack;
`cryoensemble_parameters` (JSON) is what a rerun must match to resume.
"""

import dataclasses
import datetime
import functools
import json
import os
import shutil
import threading
import time
import warnings
from typing import Any

import numpy as np

from .errors import CryoEnsembleError


class StoreMismatchError(CryoEnsembleError, ValueError):
    """A store made with other parameters, or a path that is not a cryoensemble store."""


POTENTIAL = "potential"
RENDERED = "rendered"
_MAX_CHUNK_BYTES = 16 * 2**20


@dataclasses.dataclass(frozen=True)
class StoreLayout:
    """Shape, dtype and chunking of a store's `potential` array."""

    n_conformations: int
    shape: tuple[int, int, int]
    dtype: str
    z_chunk: int

    @property
    def chunks(self) -> tuple[int, int, int, int]:
        return (1, self.z_chunk, self.shape[1], self.shape[2])

    @property
    def n_z_chunks(self) -> int:
        return -(-self.shape[0] // self.z_chunk)


def choose_z_chunk(shape, dtype: str, z_slabs: int = 1) -> int:
    """Planes per chunk: the slab size when split into slabs, else <= 16 MiB chunks."""
    nz, ny, nx = shape
    if z_slabs > 1:
        return -(-nz // z_slabs)
    plane = ny * nx * np.dtype(dtype).itemsize
    return max(1, min(nz, _MAX_CHUNK_BYTES // plane))


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in ("cryoensemble", "jax", "jaxlib", "equinox", "numpy", "gemmi", "dask",
                 "distributed", "zarr", "xarray", "MDAnalysis"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            pass
    return versions


def _is_store(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "zarr.json"))


def read_parameters(path: str) -> dict[str, Any] | None:
    """The `cryoensemble_parameters` of a store, or None if `path` is no store of ours."""
    if not _is_store(path):
        return None
    with open(os.path.join(path, "zarr.json")) as handle:
        attributes = json.load(handle).get("attributes", {})
    text = attributes.get("cryoensemble_parameters")
    return None if text is None else json.loads(text)


def _differences(old: dict, new: dict, prefix="") -> list[str]:
    keys = sorted(set(old) | set(new))
    out = []
    for key in keys:
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(_differences(a, b, prefix + key + "."))
        elif a != b:
            out.append(f"{prefix}{key}: store has {a!r}, asked {b!r}")
    return out


def prepare_store(
    path: str,
    layout: StoreLayout,
    parameters: dict[str, Any],
    labels: dict[str, np.ndarray],
    attributes: dict[str, Any],
    overwrite: bool = False,
) -> bool:
    """Create the store, or check that an existing one was made with `parameters`.

    Returns True if a new store was created. An existing store with other parameters is
    refused with the differences named, unless `overwrite`; a path that is not a
    cryoensemble store is never deleted.
    """
    parameters = json.loads(json.dumps(parameters))  # JSON round trip, as stored
    if os.path.exists(path):
        existing = read_parameters(path)
        if existing is None:
            raise StoreMismatchError(
                f"{path}: exists and is not a cryoensemble store; refusing to touch it"
            )
        if existing == parameters:
            return False
        if not overwrite:
            differences = "; ".join(_differences(existing, parameters))
            raise StoreMismatchError(
                f"{path}: made with other parameters ({differences}); pass overwrite to replace it"
            )
        shutil.rmtree(path)
    _create(path, layout, parameters, labels, attributes)
    return True


def _create(path, layout, parameters, labels, attributes):
    import dask.array as da
    import xarray as xr
    import zarr

    from .coordinates.grids import make_coordinate_axis

    nz, ny, nx = layout.shape
    voxel_size = parameters["voxel_size"]
    coords = {
        "conformation": np.arange(layout.n_conformations, dtype=np.int64),
        "z": make_coordinate_axis(nz, voxel_size),
        "y": make_coordinate_axis(ny, voxel_size),
        "x": make_coordinate_axis(nx, voxel_size),
    }
    for name, values in labels.items():
        values = np.asarray(values)
        if values.dtype.kind in "US":
            values = values.astype(object)  # variable-length strings in zarr 3
        coords[name] = ("conformation", values)
    potential = da.zeros(
        (layout.n_conformations, nz, ny, nx), dtype=layout.dtype, chunks=layout.chunks
    )
    rendered = da.zeros((layout.n_conformations,), dtype=np.uint8, chunks=1)
    dataset = xr.Dataset(
        {
            POTENTIAL: (("conformation", "z", "y", "x"), potential, {
                "units": "A^-2",
                "long_name": "rescaled electrostatic potential U = m0 e V / (2 pi hbar^2), "
                "voxel averages",
            }),
            RENDERED: (("conformation",), rendered, {
                "long_name": "1 once the conformation's potential is fully written",
            }),
        },
        coords=coords,
    )
    for axis in ("z", "y", "x"):
        dataset[axis].attrs.update(units="A", long_name=f"{axis} of voxel centres")
    dataset.attrs.update(attributes)
    dataset.attrs["cryoensemble_parameters"] = json.dumps(parameters, sort_keys=True)
    dataset.attrs["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
    dataset.attrs["versions"] = json.dumps(package_versions(), sort_keys=True)
    # zstd level 1, byte shuffle: on rendered potentials 3x faster than level 3 with
    # bit shuffle and smaller (ratio 0.080 vs 0.096 on AdK at 96^3; benchmarks/).
    compressor = zarr.codecs.BloscCodec(cname="zstd", clevel=1, shuffle="shuffle")
    encoding = {
        POTENTIAL: {"chunks": layout.chunks, "compressors": (compressor,)},
        RENDERED: {"chunks": (1,)},
    }
    # Metadata never changes after creation, so it is consolidated once: opening is fast
    # and plain `xarray.open_zarr(path)` works.
    with warnings.catch_warnings():
        # zarr notes that consolidation is an extension of format 3; readers here use it.
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        dataset.to_zarr(path, mode="w-", compute=False, zarr_format=3, encoding=encoding,
                        consolidated=True)
    # Every chunk is written, zeros too: its presence is part of "done".
    for name in (POTENTIAL, RENDERED):
        array = zarr.open_array(path, path=name, mode="r+")
        assert array.shape[0] == layout.n_conformations


def _chunk_path(path: str, name: str, index: tuple[int, ...]) -> str:
    return os.path.join(path, name, "c", *map(str, index))


def done_conformations(path: str, layout: StoreLayout) -> np.ndarray:
    """Boolean (n_conformations,): marker and every data chunk present on disk."""
    done = np.zeros(layout.n_conformations, dtype=bool)
    for i in range(layout.n_conformations):
        if not os.path.exists(_chunk_path(path, RENDERED, (i,))):
            continue
        done[i] = all(
            os.path.exists(_chunk_path(path, POTENTIAL, (i, z, 0, 0)))
            for z in range(layout.n_z_chunks)
        )
    return done


def _chunk_encoder(path: str):
    """See `_chunk_encoder_for`; keyed by the metadata file's identity, so a store
    replaced at the same path (overwrite) is never written with a stale layout."""
    info = os.stat(os.path.join(path, POTENTIAL, "zarr.json"))
    return _chunk_encoder_for(path, info.st_ino, info.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _chunk_encoder_for(path: str, inode: int, mtime_ns: int):
    """(z_chunk, dtype, encode, nz, fill) for a store whose `potential` chunks we can
    write as files: the codec chain zarr itself would apply (little-endian bytes, then
    blosc with the store's settings), or None for any other layout, which then goes
    through zarr."""
    import numcodecs

    meta = _array_metadata(path, POTENTIAL)
    codecs = meta.get("codecs", [])
    if (
        [c.get("name") for c in codecs] != ["bytes", "blosc"]
        or codecs[0].get("configuration", {}).get("endian", "little") != "little"
        or not _default_chunk_keys(meta)
    ):
        return None
    config = codecs[1]["configuration"]
    shuffle = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}[config["shuffle"]]
    blosc = numcodecs.Blosc(config["cname"], config["clevel"], shuffle, config.get("blocksize", 0))
    dtype = np.dtype(meta["data_type"]).newbyteorder("<")
    z_chunk = meta["chunk_grid"]["configuration"]["chunk_shape"][1]
    fill = meta.get("fill_value", 0)
    fill = float(fill) if isinstance(fill, str) else fill  # "NaN", "Infinity" in JSON
    return z_chunk, dtype, blosc.encode, meta["shape"][1], fill


def _array_metadata(path: str, name: str) -> dict:
    with open(os.path.join(path, name, "zarr.json")) as handle:
        return json.load(handle)


def _default_chunk_keys(meta: dict) -> bool:
    """Whether chunk files are named `c/i/j/...` (what `_chunk_path` writes)."""
    encoding = meta.get("chunk_key_encoding", {})
    return (encoding.get("name") == "default"
            and encoding.get("configuration", {}).get("separator", "/") == "/")


def _write_file(target: str, data: bytes) -> None:
    """Write a chunk file under a temporary name, then rename: never a partial chunk."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    temporary = f"{target}.{os.getpid()}.{threading.get_ident()}.tmp"
    with open(temporary, "wb") as handle:
        handle.write(data)
    os.replace(temporary, target)


def chunk_writers(path: str, start: int, volumes: np.ndarray, z_start: int = 0):
    """Zero-argument callables that each encode and write one chunk of `volumes` into
    `potential[start:start+n, z_start:z_start+nz]` and return (encode s, file s); or None
    where the store must be written through zarr (not local, or another codec chain,
    or not chunk-aligned).

    Each callable is the same bytes zarr would write, at a fifth of the CPU time of
    zarr's generic path; blosc releases the GIL while it compresses (single-threaded
    per call off the main thread), so a thread pool runs several side by side.
    """
    encoder = _chunk_encoder(path) if os.path.isdir(path) else None
    if encoder is None or z_start % encoder[0] or volumes.shape[1] % encoder[0] and (
        z_start + volumes.shape[1] != encoder[3]
    ):
        return None
    z_chunk, dtype, encode, _, fill = encoder

    def write(target, block):
        t0 = time.perf_counter()
        if block.shape[0] < z_chunk:  # the grid's last, partial chunk: padded as zarr does
            pad = np.full((z_chunk - block.shape[0],) + block.shape[1:], fill, block.dtype)
            block = np.concatenate([block, pad])
        data = encode(np.ascontiguousarray(block, dtype=dtype))
        t1 = time.perf_counter()
        _write_file(target, data)
        return t1 - t0, time.perf_counter() - t1

    return [
        functools.partial(
            write, _chunk_path(path, POTENTIAL, (start + i, (z_start + z0) // z_chunk, 0, 0)),
            volume[z0 : z0 + z_chunk])
        for i, volume in enumerate(volumes)
        for z0 in range(0, volumes.shape[1], z_chunk)
    ]


def write_volumes(path: str, start: int, volumes: np.ndarray, z_start: int = 0) -> None:
    """Write volumes into `potential[start:start+n, z_start:z_start+nz]` (chunk-aligned).

    On a local store each chunk is encoded here and written as its file (see
    `chunk_writers`); elsewhere through zarr.
    """
    writers = chunk_writers(path, start, volumes, z_start)
    if writers is not None:
        for write in writers:
            write()
        return
    import zarr

    array = zarr.open_array(path, path=POTENTIAL, mode="r+", config={"write_empty_chunks": True})
    stop = start + volumes.shape[0]
    array[start:stop, z_start : z_start + volumes.shape[1]] = volumes.astype(array.dtype)


@functools.lru_cache(maxsize=8)
def _marker_chunk_for(path: str, inode: int, mtime_ns: int) -> bytes | None:
    """The encoded bytes of one `rendered` chunk holding 1, as zarr writes it (bytes then
    zstd), or None for another codec chain (then zarr writes the markers)."""
    import numcodecs

    meta = _array_metadata(path, RENDERED)
    codecs = meta.get("codecs", [])
    if (
        [c.get("name") for c in codecs] != ["bytes", "zstd"]
        or meta["chunk_grid"]["configuration"]["chunk_shape"] != [1]
        or not _default_chunk_keys(meta)
    ):
        return None
    config = codecs[1].get("configuration", {})
    zstd = numcodecs.Zstd(level=config.get("level", 0), checksum=config.get("checksum", False))
    return bytes(zstd.encode(np.ones(1, np.uint8)))


def mark_rendered(path: str, start: int, stop: int) -> None:
    """Mark conformations done, after their data is written. On a local store the marker
    chunk files are written directly (the same bytes; zarr's path cost ~1 ms each)."""
    marker = None
    if os.path.isdir(path):
        info = os.stat(os.path.join(path, RENDERED, "zarr.json"))
        marker = _marker_chunk_for(path, info.st_ino, info.st_mtime_ns)
    if marker is not None:
        for i in range(start, stop):
            _write_file(_chunk_path(path, RENDERED, (i,)), marker)
        return
    import zarr

    array = zarr.open_array(path, path=RENDERED, mode="r+", config={"write_empty_chunks": True})
    array[start:stop] = 1


def open_store(path: str):
    """Open a store lazily as an `xarray.Dataset`."""
    import xarray as xr

    return xr.open_zarr(path, consolidated=True)
