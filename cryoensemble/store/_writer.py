"""Creating, resuming and writing a store, through zarr's own codec pipeline.

Creation order: the identity object (`cryoensemble.json`, parameters), then every zarr
metadata document and coordinate chunk, the root `zarr.json` (consolidated) last. Each is
one atomic object, so a run killed at any point leaves a store that the next run with the
same parameters recognises and finishes (missing metadata is written again, nothing
rendered is lost), and that `overwrite` may replace. A conformation is done when its
`rendered` chunk exists and each of its shards exists or is recorded as empty; its data is
written (and fsynced, on a local disk) before that marker. Markers and empty records are
not fsynced: one lost in a crash only makes its conformation render again.
"""

import os
import threading

import numpy as np

from ..errors import StoreMismatchError
from ._layout import EMPTY_SHARD, IMAGES, POTENTIAL, RENDERED, ImageStackLayout, StoreLayout
from ._lease import LEASE
from ._location import StoreLocation, sync_files, write_files
from ._schema import (
    IDENTITY,
    canonical,
    differences,
    identity_document,
    metadata_objects,
    parameters_from_root_metadata,
    parse_identity,
)


ROOT_METADATA = "zarr.json"
# Temporary names of interrupted local writes: zarr's LocalStore and `StoreLocation.put`.
_TEMPORARY_SUFFIX = ".partial"


def as_location(store, storage_options=None) -> StoreLocation:
    """A `StoreLocation` from a path, URL or location (see `StoreLocation.from_url`)."""
    return StoreLocation.from_url(store, storage_options)


def _identity(location: StoreLocation) -> dict | None:
    return parse_identity(location.get(IDENTITY))


def read_parameters(store, storage_options=None) -> dict | None:
    """The parameters a store was made with, or None if it is no cryoensemble store."""
    location = as_location(store, storage_options)
    identity = _identity(location)
    if identity is not None:
        return identity["parameters"]
    return parameters_from_root_metadata(location.get(ROOT_METADATA))


def store_generation(store, storage_options=None) -> str:
    """What tells this incarnation of a store from an earlier one at the same place (its
    creation time): workers key cached writers by it, so a replaced store is reopened."""
    location = as_location(store, storage_options)
    identity = _identity(location)
    created = identity["created"] if identity else _created_attribute(location)
    return str(created or "")


def _ours_or_empty(location: StoreLocation) -> tuple[str, dict | None]:
    """("empty" | "ours" | "foreign", parameters) from the root's entries."""
    top = location.top_level()
    leftovers = [n for n in top if n != LEASE and not n.endswith(_TEMPORARY_SUFFIX)]
    if not leftovers:
        return "empty", None
    parameters = read_parameters(location)
    return ("ours", parameters) if parameters is not None else ("foreign", None)


def check_target(store, storage_options=None) -> None:
    """Refuse (`StoreMismatchError`) a folder or prefix that holds something other than a
    cryoensemble store, before anything (a lease) is written into it."""
    location = as_location(store, storage_options)
    if _ours_or_empty(location)[0] == "foreign":
        raise StoreMismatchError(
            f"{location.url}: exists and is not a cryoensemble store; refusing to touch it"
        )


def prepare_store(store, layout: StoreLayout, parameters: dict, labels: dict,
                  attributes: dict, overwrite: bool = False, storage_options=None) -> bool:
    """Create the store, finish one whose creation was interrupted, or check that an
    existing one was made with `parameters`. Returns True if a new store was created.

    An existing store with other parameters is refused with the differences named, unless
    `overwrite`; a folder or prefix that is not a cryoensemble store is never deleted.
    Temporary objects of interrupted writes are removed (the caller holds the lease).
    """
    location = as_location(store, storage_options)
    parameters = canonical(parameters)
    kind, existing = _ours_or_empty(location)
    if kind == "foreign":
        raise StoreMismatchError(
            f"{location.url}: exists and is not a cryoensemble store; refusing to touch it"
        )
    if kind == "ours" and existing == parameters:
        _remove_temporaries(location)
        identity = _identity(location)
        created = identity["created"] if identity else _created_attribute(location)
        _write_metadata(location, layout, parameters, labels, attributes, created,
                        only_missing=True)
        return False
    if kind == "ours":
        if not overwrite:
            found = "; ".join(differences(existing or {}, parameters))
            raise StoreMismatchError(
                f"{location.url}: made with other parameters ({found}); pass overwrite to replace it"
            )
        _wipe(location)
    else:
        _remove_temporaries(location)
    _write_metadata(location, layout, parameters, labels, attributes, None, only_missing=False)
    return True


def _created_attribute(location: StoreLocation) -> str | None:
    import json

    data = location.get(ROOT_METADATA)
    try:
        return json.loads(data)["attributes"].get("created") if data else None
    except (ValueError, KeyError, TypeError):
        return None


def _wipe(location: StoreLocation) -> None:
    """Delete a cryoensemble store's contents (its lease stays: we hold it)."""
    for name in location.top_level():
        if name == LEASE:
            continue
        location.delete_folder(name)


def _remove_temporaries(location: StoreLocation) -> None:
    if location.is_local:
        location.delete([k for k in location.list_keys() if k.endswith(_TEMPORARY_SUFFIX)])


def _write_metadata(location, layout, parameters, labels, attributes, created, only_missing):
    import datetime

    created = created or datetime.datetime.now(datetime.timezone.utc).isoformat()
    if _identity(location) is None:
        location.put(IDENTITY, identity_document(parameters, created, layout.format))
    objects = metadata_objects(layout, parameters, labels, attributes, created)
    root = objects.pop(ROOT_METADATA)
    for key, data in objects.items():
        if not only_missing or not _valid(location.get(key), key):
            location.put(key, data)
    if not only_missing or not _valid(location.get(ROOT_METADATA), ROOT_METADATA):
        location.put(ROOT_METADATA, root)


def _valid(data: bytes | None, key: str) -> bool:
    import json

    if data is None:
        return False
    if key.endswith(".json"):
        try:
            json.loads(data)
        except ValueError:
            return False
    return True


def _indices(keys, prefix: str, n_parts: int) -> set[tuple[int, ...]]:
    out = set()
    for key in keys:
        parts = key[len(prefix):].split("/")
        if len(parts) != n_parts:
            continue
        try:
            out.add(tuple(int(p) for p in parts))
        except ValueError:
            continue  # a temporary or foreign object
    return out


def stored_objects(location: StoreLocation, layout=None) -> dict[str, set]:
    """The units' objects the store lists (conformations of a potential store, chunks
    of a particle store): `markers` {i}, `shards` {(i, s)}, `empty` {(i, s)}."""
    array = POTENTIAL if layout is None else layout.array
    n_parts = 4 if layout is None else len(layout.shards)
    markers = {i for (i,) in _indices(location.list_keys(f"{RENDERED}/c"), f"{RENDERED}/c/", 1)}
    shards = {key[:2] for key in
              _indices(location.list_keys(f"{array}/c"), f"{array}/c/", n_parts)}
    empty = _indices(location.list_keys(f"{EMPTY_SHARD}/c"), f"{EMPTY_SHARD}/c/", 2)
    return {"markers": markers, "shards": shards, "empty": empty}


def _shard_key(layout, unit: int, shard: int) -> str:
    if isinstance(layout, ImageStackLayout):
        return f"{IMAGES}/c/{unit}/0/0"
    return f"{POTENTIAL}/c/{unit}/{shard}/0/0"


def done_conformations(store, layout: StoreLayout, storage_options=None) -> np.ndarray:
    """Boolean (n_units,): marker present and every shard stored or recorded empty, from
    the store's own listings (units: conformations, or chunks of particles)."""
    location = as_location(store, storage_options)
    objects = stored_objects(location, layout)
    done = np.zeros(layout.n_units, dtype=bool)
    present = objects["shards"] | objects["empty"]
    for i in objects["markers"]:
        if i < layout.n_units:
            done[i] = all((i, s) in present for s in range(layout.shards_per_unit))
    return done


def forget_conformations(store, conformations, storage_options=None, layout=None) -> None:
    """Remove units' markers, then their shards and empty records, so the next render
    writes them again (what `verify --repair` does to bad conformations or chunks)."""
    location = as_location(store, storage_options)
    conformations = sorted({int(i) for i in conformations})
    if not conformations:
        return
    wanted = set(conformations)
    location.delete([f"{RENDERED}/c/{i}" for i in conformations
                     if location.get(f"{RENDERED}/c/{i}") is not None])
    objects = stored_objects(location, layout)
    location.delete([_shard_key(layout, i, s) for i, s in objects["shards"] if i in wanted])
    location.delete([f"{EMPTY_SHARD}/c/{i}/{s}" for i, s in objects["empty"] if i in wanted])


class StoreWriter:
    """Open array handles of one store for a worker: write volumes, record empty shards,
    mark conformations done. Cheap to make (reads three metadata documents); a worker
    may keep one per store.

    **Arguments:**

    - `location`: the store (see `StoreLocation`).
    """

    def __init__(self, location: StoreLocation):
        import zarr

        self.location = location
        store = location.zarr_store()
        config = {"write_empty_chunks": False}
        self._potential = zarr.open_array(store, path=POTENTIAL, mode="r+", config=config)
        self._rendered = zarr.open_array(store, path=RENDERED, mode="r+", config=config)
        self._empty = zarr.open_array(store, path=EMPTY_SHARD, mode="r+", config=config)
        n, nz, ny, nx = self._potential.shape
        shards = self._potential.shards or self._potential.chunks
        self.layout = StoreLayout(n, (nz, ny, nx), str(self._potential.dtype), shards[1])
        # Every marker and empty record is the same one-element chunk holding 1: encoded
        # once by zarr, then stored as plain objects (no codec pipeline per conformation).
        self._marker = _one_chunk(self._rendered)
        self._empty_record = _one_chunk(self._empty)
        self._io_cpu, self._io_lock = [0.0, 0.0], threading.Lock()

    @property
    def io_cpu_s(self) -> tuple[float, float]:
        """CPU time (user, system s) spent so far by the threads this writer started to
        write and fsync local files (the calling threads' own time is theirs to count)."""
        return self._io_cpu[0], self._io_cpu[1]

    def write_volumes(self, start: int, volumes: np.ndarray, z_start: int = 0) -> None:
        """Write `volumes` (n, z, y, x) into `potential[start:start+n, z_start:z_start+z]`:
        whole shards only (each task owns its shards, so none is read back)."""
        layout = self.layout
        n, z_size = volumes.shape[:2]
        z_stop = z_start + z_size
        if z_start % layout.z_chunk or (z_stop % layout.z_chunk and z_stop != layout.shape[0]):
            raise ValueError(f"{self.location.url}: planes [{z_start}, {z_stop}) are not whole "
                             f"shards of {layout.z_chunk} planes")
        self._potential[start : start + n, z_start:z_stop] = volumes.astype(layout.dtype, copy=False)
        written, empty = [], []
        for i in range(n):
            for s, a, b in layout.shard_ranges(z_start, z_stop):
                if volumes[i, a - z_start : b - z_start].any():
                    written.append(f"{POTENTIAL}/c/{start + i}/{s}/0/0")
                else:
                    empty.append((start + i, s))
        self._record_empty(empty)
        self._fsync(written)

    @property
    def potential_array(self):
        """The `potential` `zarr.Array` (for encoders that need its codecs and chunking)."""
        return self._potential

    def write_objects(self, objects: dict) -> int:
        """Store already-encoded objects of `potential` whole (what
        `ZarrChunkEncoder.encode` returns: `{key relative to the array: bytes or None}`,
        keys `c/<conformation>/<shard>/0/0`); None records the shard as empty, as
        `write_volumes` does for an all-zero shard. The bytes are exactly zarr's, so any
        zarr reader decodes them. Returns the bytes written."""
        data, empty = {}, []
        for key, value in objects.items():
            parts = key.split("/")
            if len(parts) != 5 or parts[0] != "c" or parts[3:] != ["0", "0"]:
                raise ValueError(f"{self.location.url}: {key!r} is not a shard key of "
                                 f"{POTENTIAL} (c/<conformation>/<shard>/0/0)")
            if value is None:
                empty.append((int(parts[1]), int(parts[2])))
            else:
                data[f"{POTENTIAL}/{key}"] = value
        self._put_all(data, durable=True)
        self._record_empty(empty)
        return sum(len(v) for v in data.values())

    def _put_all(self, objects: dict, durable: bool) -> None:
        """Write objects whole; with `durable`, local files are fsynced (with their
        folders) before returning, so the marker written after them never points at data
        a crash could lose. Object stores put each object atomically."""
        if not objects:
            return
        fs, root = self.location.filesystem()
        if not self.location.is_local:
            fs.pipe({f"{root}/{key}": bytes(value) for key, value in objects.items()})
            return
        user, system = write_files(
            {os.path.join(root, *key.split("/")): value for key, value in objects.items()}, durable)
        with self._io_lock:
            self._io_cpu[0] += user
            self._io_cpu[1] += system

    def _record_empty(self, empty) -> None:
        """Record `(conformation, shard)`s whose shard holds only zeros."""
        if self._empty_record is None or not self.location.is_local:
            for i, s in empty:
                self._empty[i, s] = 1
            return
        self._put_all({f"{EMPTY_SHARD}/c/{i}/{s}": self._empty_record for i, s in empty},
                      durable=False)

    def mark_rendered(self, start: int, stop: int) -> None:
        """Mark conformations [start, stop) done (after all their data is written). On a
        local disk the markers are plain files of zarr's encoded chunk; on object storage
        zarr writes them (a request each either way)."""
        if self._marker is None or not self.location.is_local:
            self._rendered[start:stop] = 1
            return
        self._put_all({f"{RENDERED}/c/{i}": self._marker for i in range(start, stop)},
                      durable=False)

    def _fsync(self, keys) -> None:
        """Make local objects durable before the marker that says they are there."""
        if self.location.is_local:
            sync_files(os.path.join(self.location.url, *key.split("/")) for key in keys)


class ImageStackWriter:
    """Open array handles of one particle store: write a chunk's images and noise
    sigmas, then its marker (as `StoreWriter` for volumes).

    **Arguments:**

    - `location`: the store (see `StoreLocation`).
    """

    def __init__(self, location: StoreLocation):
        import zarr

        self.location = location
        store = location.zarr_store()
        config = {"write_empty_chunks": False}
        self._images = zarr.open_array(store, path=IMAGES, mode="r+", config=config)
        # Sigmas are all zero without noise; their chunk is written anyway, so its
        # presence and checksum are verifiable.
        self._sigma = zarr.open_array(store, path="noise_sigma", mode="r+",
                                      config={"write_empty_chunks": True})
        self._rendered = zarr.open_array(store, path=RENDERED, mode="r+", config=config)
        self._empty = zarr.open_array(store, path=EMPTY_SHARD, mode="r+", config=config)
        n, ny, nx = self._images.shape
        self.layout = ImageStackLayout(n, (ny, nx), str(self._images.dtype),
                                       (self._images.shards or self._images.chunks)[0])

    def write_chunk(self, chunk: int, images: np.ndarray, noise_sigma: np.ndarray) -> None:
        """Write chunk `chunk` whole: `images` (n, y, x) and `noise_sigma` (n,)."""
        start, stop = self.layout.unit_range(chunk)
        if len(images) != stop - start or len(noise_sigma) != stop - start:
            raise ValueError(f"{self.location.url}: chunk {chunk} holds {stop - start} "
                             f"particles; got {len(images)} images")
        self._images[start:stop] = images.astype(self.layout.dtype, copy=False)
        self._sigma[start:stop] = noise_sigma
        keys = [f"noise_sigma/c/{chunk}"]
        if images.any():
            keys.append(f"{IMAGES}/c/{chunk}/0/0")
        else:
            self._empty[chunk, 0] = 1
            keys.append(f"{EMPTY_SHARD}/c/{chunk}/0")
        self._fsync(keys)

    def mark_rendered(self, start: int, stop: int) -> None:
        """Mark chunks [start, stop) done (after all their data is written)."""
        self._rendered[start:stop] = 1

    _fsync = StoreWriter._fsync


def _one_chunk(array) -> bytes | None:
    """The stored bytes of a chunk of `array` holding the value 1, as zarr's own codec
    pipeline encodes it (in memory); None where chunks hold several elements."""
    import zarr
    from zarr.core.buffer import default_buffer_prototype
    from zarr.storage import MemoryStore

    if any(c != 1 for c in array.chunks) or array.shards is not None:
        return None
    objects = dict(array.metadata.to_buffer_dict(default_buffer_prototype()))
    scratch = zarr.open_array(MemoryStore(objects), mode="r+")
    scratch[(0,) * scratch.ndim] = 1
    return objects[array.metadata.encode_chunk_key((0,) * scratch.ndim)].to_bytes()


def open_writer(store, storage_options=None) -> StoreWriter:
    """A `StoreWriter` for an existing store."""
    return StoreWriter(as_location(store, storage_options))


def write_volumes(store, start: int, volumes: np.ndarray, z_start: int = 0,
                  storage_options=None) -> None:
    """Write whole shards of `potential` (see `StoreWriter.write_volumes`)."""
    open_writer(store, storage_options).write_volumes(start, volumes, z_start)


def mark_rendered(store, start: int, stop: int, storage_options=None) -> None:
    """Mark conformations [start, stop) done (see `StoreWriter.mark_rendered`)."""
    open_writer(store, storage_options).mark_rendered(start, stop)


def open_store(store, storage_options=None):
    """Open a store lazily as an `xarray.Dataset`."""
    import xarray as xr

    location = as_location(store, storage_options)
    return xr.open_zarr(location.zarr_store(read_only=True), consolidated=True)
