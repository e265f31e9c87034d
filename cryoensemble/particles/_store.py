"""The particle dataset in a zarr v3 store: create, write a chunk, mark it done.

Layout: `images (particle, y, x)` chunked by `images_per_chunk` particles (one chunk per
task; crc32c checksums, no compression: noise does not compress), `noise_sigma
(particle,)` chunked alike, `rendered (chunk,)` one marker per chunk (written after its
data), and the per-particle labels as coordinates. Attributes hold the parameters as
JSON; a rerun with the same parameters renders only the chunks not yet marked.
Kept small and separate so it can move onto the store package's generic writer.
"""

import json
import os
import shutil

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec

from ..errors import CryoEnsembleError


FORMAT = "cryoensemble-particles/1"


class ParticleStoreError(CryoEnsembleError, ValueError):
    """A store that cannot hold, or does not hold, this particle dataset."""


def read_parameters(path: str) -> dict | None:
    """The parameters of a particle store, or None if `path` is not one."""
    try:
        group = zarr.open_group(path, mode="r")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, ValueError):
        return None
    if group.attrs.get("format") != FORMAT:
        return None
    return json.loads(group.attrs["parameters"])


def _differences(old: dict, new: dict) -> list[str]:
    return [f"{key}: {old.get(key)!r} -> {new.get(key)!r}"
            for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]


def _half_made(path: str) -> bool:
    """A particle store whose creation was interrupted: parameters but no format mark."""
    try:
        attrs = zarr.open_group(path, mode="r").attrs
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, ValueError):
        return False
    return "parameters" in attrs and attrs.get("format") != FORMAT


def create_store(path: str, dataset, parameters: dict, *, overwrite: bool) -> bool:
    """Create the store from `dataset` (an xarray Dataset whose `images`, `noise_sigma`
    and `rendered` are lazy and whose labels are in memory), unless a store with the
    same parameters exists. The format mark is written last, so a creation interrupted
    at any point is redone by the next run. Returns True if it created one.
    """
    existing = read_parameters(path) if os.path.exists(path) else None
    if existing is not None and not overwrite:
        if existing != parameters:
            raise ParticleStoreError(
                f"{path}: a particle store made with other parameters ("
                + "; ".join(_differences(existing, parameters)) + "); pass overwrite=True"
            )
        return False
    if os.path.exists(path):
        if existing is None and os.listdir(path) and not _half_made(path):
            raise ParticleStoreError(f"{path}: exists and is not a cryoensemble particle store")
        shutil.rmtree(path)
    n_chunk = parameters["images_per_chunk"]
    ny, nx = parameters["shape"]
    dataset = dataset.copy()
    dataset.attrs.update(parameters=json.dumps(parameters, sort_keys=True))
    encoding = {
        "images": {"chunks": (n_chunk, ny, nx), "compressors": [Crc32cCodec()]},
        "noise_sigma": {"chunks": (n_chunk,)},
        "rendered": {"chunks": (1,)},
    }
    # Labels are written now; the lazy arrays get metadata only (tasks fill them).
    dataset.to_zarr(path, mode="w", compute=False, zarr_format=3, consolidated=False,
                    encoding=encoding)
    zarr.open_group(path, mode="r+").attrs["format"] = FORMAT
    return True


def done_chunks(path: str) -> np.ndarray:
    """The rendered marker of every chunk (False where the marker is missing)."""
    return np.asarray(zarr.open_array(path, path="rendered", mode="r")[:], dtype=bool)


def write_chunk(path: str, chunk: int, images: np.ndarray, noise_sigma: np.ndarray) -> None:
    """Write one whole chunk of images and noise sigmas."""
    group = zarr.open_group(path, mode="r+")
    start = chunk * group["images"].chunks[0]
    group["images"][start : start + len(images)] = images
    group["noise_sigma"][start : start + len(images)] = noise_sigma


def mark_done(path: str, chunk: int) -> None:
    """Mark a chunk rendered (after its data is written)."""
    zarr.open_array(path, path="rendered", mode="r+")[chunk] = True
