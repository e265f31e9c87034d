"""simulate_images: an ensemble source to a labelled particle-image dataset."""

import hashlib
import math
import os
import sys

import numpy as np

from ..errors import StoreMismatchError
from ..sources import AbstractEnsembleSource
from ._labels import CTFDistribution, ParticleParameterError, conformation_weights, draw_labels
from ._render import CTF_LABELS, ImageSpec, render_batch
from ._volumes import PROJECTIONS, StoredVolumes, render_volume_batch


_DEFAULT_CTF = CTFDistribution()
_IMAGE_ATTRIBUTES = ("units", "pixel_size_angstrom", "centre_angstrom", "voltage_kilovolts", "snr",
                     "ctf", "projection", "noise")


class ParticleStoreError(StoreMismatchError):
    """A store that cannot hold, or does not hold, this particle dataset."""


def _render_chunk(source, spec: ImageSpec, labels: dict, store, chunk: int, projection: str):
    """One chunk's images and sigmas, returned (`store` None) or written to the store
    (a `StoreLocation`) with its marker."""
    if isinstance(source, StoredVolumes):
        images, sigmas = render_volume_batch(source, spec, projection, labels, CTF_LABELS)
    else:
        images, sigmas = render_batch(source, spec, labels)
    if store is None:
        return images, sigmas
    from ..store import ImageStackWriter

    writer = ImageStackWriter(store)
    writer.write_chunk(chunk, images, sigmas)
    writer.mark_rendered(chunk, chunk + 1)
    return chunk


def _is_location(value) -> bool:
    from ..store import StoreLocation

    return isinstance(value, StoreLocation)


def _shape(box) -> tuple[int, int]:
    shape = (box, box) if np.ndim(box) == 0 else tuple(box)
    if len(shape) != 2 or not all(int(s) == s and s >= 1 for s in shape):
        raise ParticleParameterError(f"box: expected N or (NY, NX) positive integers; got {box!r}")
    return int(shape[0]), int(shape[1])


def _coordinates(labels: dict, source: AbstractEnsembleSource, spec: ImageSpec) -> dict:
    """Labels as xarray coordinates along `particle` (units in attributes)."""
    # UDUNITS spellings, as the potential store's.
    units = {"angle_rot": "degree", "angle_tilt": "degree", "angle_psi": "degree",
             "shift_x": "angstrom", "shift_y": "angstrom", "defocus_u": "angstrom",
             "defocus_v": "angstrom", "defocus_angle": "degree", "phase_shift": "degree",
             "ctf_b_factor": "angstrom2", "spherical_aberration": "mm"}
    coords = {}
    for name, values in labels.items():
        if name == "quaternion":
            coords[name] = (("particle", "wxyz"), values,
                            {"description": "(w, x, y, z) of the rotation r' = R r "
                                            "(cryojax QuaternionPose)"})
        else:
            coords[name] = ("particle", values, {"units": units[name]} if name in units else {})
    for name, values in source.labels().items():
        coords[f"source_{name}"] = ("particle", np.asarray(values)[labels["conformation"]])
    ny, nx = spec.shape
    for axis, n in (("y", ny), ("x", nx)):
        coords[axis] = (axis, (np.arange(n) - n // 2) * spec.pixel_size, {"units": "angstrom"})
    return coords


def simulate_images(
    source,
    *,
    n_images: int,
    box,
    pixel_size: float,
    poses=None,
    ctf: CTFDistribution | None = _DEFAULT_CTF,
    snr: float | None = 0.1,
    seed: int = 0,
    store: str | None = None,
    voltage_in_kilovolts: float = 300.0,
    weights=None,
    shift_sigma: float = 0.0,
    dtype: str = "float32",
    images_per_chunk: int | None = None,
    images_per_step: int | None = None,
    projection: str = "fourier-linear",
    center=True,
    extra_b_factor: float = 0.0,
    overwrite: bool = False,
    client=None,
    scheduler_address: str | None = None,
    gpus: int | None = None,
    n_workers: int | None = None,
    progress: bool = False,
    storage_options: dict | None = None,
):
    """Simulate a labelled particle-image dataset from an ensemble.

    Each particle draws a conformation (by weight), a pose (uniform on SO(3) unless
    given), an in-plane shift, CTF parameters and a noise seed; its image is the exact
    pixel-averaged projection of the posed atoms times the interaction constant,
    transferred by the CTF, plus white gaussian noise of standard deviation
    `std(noiseless image) / sqrt(snr)`. Images are contrast (cryojax's sign:
    the particle is dark at low frequencies). Every label is stored, so any image can
    be regenerated; `noise_seed` seeds `jax.random.key` (threefry) for its noise.

    **Arguments:**

    - `source`: a `cryoensemble.sources` ensemble source (images projected exactly
      from its atoms), or the path of a potential store made by `render_ensemble`
      (images of its volumes by Fourier slice; `pixel_size` must be its voxel size and
      `box` at most its grid).
    - `n_images`: the number of particles.
    - `box`: the image size N or (NY, NX) in pixels; `pixel_size` in A.
    - `poses`: optional `(n_images, 4)` unit quaternions (w, x, y, z) applied to the
      model as `r' = R r` (cryojax `QuaternionPose`); default uniform random.
    - `ctf`: a `CTFDistribution`, or None for no CTF (the images are then the exit-wave
      phase shifts).
    - `snr`: signal-to-noise ratio (variance of the noiseless image over the box over
      the noise variance), or None for no noise.
    - `seed`: the integer seed of every random draw.
    - `store`: a path, URL (`s3://bucket/p.zarr`, ...) or `cryoensemble.store.StoreLocation`
      to write, through the store package as `render_ensemble` (writer lease, crc32c
      checksums, resumable: a rerun renders only the missing chunks; `cryoensemble
      verify` checks it); None returns the dataset lazily (dask-backed, computed on the
      current Dask scheduler).
    - `voltage_in_kilovolts`: kV; `weights`: per-conformation weights (default: the
      source's `weight` label, else uniform); `shift_sigma`: standard deviation of the
      in-plane shifts, A; `dtype`: "float32" or "float16".
    - `images_per_chunk`: particles per chunk and per task (default 512);
      `images_per_step`: particles vectorized together on the device (default: 64 on
      GPU, 1 on CPU).
    - `center`: rotate about (and centre the box on) the mean position of the first
      conformation (`True`, as `render_ensemble`), the origin (`None`), or (x, y, z) in A.
    - `extra_b_factor`: A^2 added to every atom's b (as `render_ensemble`).
    - `projection`: for a potential store, "fourier-linear" (`FourierVoxelGridVolume`,
      sinc-corrected) or "fourier-spline" (`FourierVoxelSplineVolume`), both padded
      twice; shifts are Fourier phases there.
    - `overwrite`: replace a particle store made with other parameters.
    - `client`, `scheduler_address`, `gpus`, `n_workers`: the Dask cluster (as
      `render_ensemble`); with `store`, an embedded one by default.
    - `progress`: show a progress bar.
    - `storage_options`: fsspec options of a `store` URL (and of a potential store
      given as `source`).

    **Returns:** an xarray Dataset: `images (particle, y, x)`, `noise_sigma (particle,)`,
    the labels as coordinates (and `rendered (chunk,)` for a store).
    """
    import dask
    import dask.array as da
    import xarray as xr

    if isinstance(source, (str, os.PathLike)) or _is_location(source):
        source = StoredVolumes(source, storage_options)
    elif not isinstance(source, AbstractEnsembleSource):
        raise ParticleParameterError(
            "source: expected a cryoensemble.sources ensemble source or a potential store "
            f"path; got {type(source).__name__}")
    if isinstance(source, StoredVolumes):
        if projection not in PROJECTIONS:
            raise ParticleParameterError(f"projection: one of {PROJECTIONS}; got {projection!r}")
        if not np.isclose(pixel_size, source.voxel_size, rtol=1e-6):
            raise ParticleParameterError(
                f"pixel_size: {source.path} has {source.voxel_size} A voxels; images of stored "
                f"volumes use that pixel size; got {pixel_size}")
        if max(_shape(box)) > source.shape[0]:
            raise ParticleParameterError(
                f"box: at most the stored grid ({source.shape[0]}); got {box}")
    if not (isinstance(n_images, (int, np.integer)) and n_images >= 1):
        raise ParticleParameterError(f"n_images: expected a positive integer; got {n_images!r}")
    shape = _shape(box)
    if not (np.isfinite(pixel_size) and pixel_size > 0):
        raise ParticleParameterError(f"pixel_size: must be > 0 (A); got {pixel_size!r}")
    if not voltage_in_kilovolts > 0:
        raise ParticleParameterError(f"voltage_in_kilovolts: must be > 0; got {voltage_in_kilovolts!r}")
    if snr is not None and not (np.isfinite(snr) and snr > 0):
        raise ParticleParameterError(f"snr: must be > 0 or None; got {snr!r}")
    if not (np.isfinite(shift_sigma) and shift_sigma >= 0):
        raise ParticleParameterError(f"shift_sigma: must be >= 0 (A); got {shift_sigma!r}")
    if dtype not in ("float32", "float16"):
        raise ParticleParameterError(f"dtype: 'float32' or 'float16'; got {dtype!r}")
    if ctf is not None and not isinstance(ctf, CTFDistribution):
        raise ParticleParameterError(f"ctf: a CTFDistribution or None; got {type(ctf).__name__}")
    per_chunk = int(images_per_chunk or min(512, n_images))
    if per_chunk < 1:
        raise ParticleParameterError(f"images_per_chunk: must be >= 1; got {images_per_chunk}")
    if images_per_step is not None and images_per_step < 1:
        raise ParticleParameterError(f"images_per_step: must be >= 1; got {images_per_step}")
    if not (np.isfinite(extra_b_factor) and extra_b_factor >= 0):
        raise ParticleParameterError(f"extra_b_factor: must be >= 0 (A^2); got {extra_b_factor!r}")
    if isinstance(source, StoredVolumes) and extra_b_factor:
        raise ParticleParameterError("extra_b_factor: applies to atoms; a potential store's "
                                     "volumes are rendered already")
    if isinstance(source, StoredVolumes) or center is None or center is False:
        centre = (0.0, 0.0, 0.0)
    elif center is True:
        centre = tuple(float(c) for c in source.read(0, 1)[0].astype(np.float64).mean(axis=0))
    else:
        centre = tuple(float(c) for c in np.broadcast_to(np.asarray(center, np.float64), (3,)))
    spec = ImageSpec(shape=shape, centre=centre, extra_b_factor=float(extra_b_factor),
                     pixel_size=float(pixel_size),
                     voltage_in_kilovolts=float(voltage_in_kilovolts), uses_ctf=ctf is not None,
                     snr=None if snr is None else float(snr), dtype=dtype,
                     images_per_chunk=per_chunk,
                     images_per_step=None if images_per_step is None else int(images_per_step))

    source_labels = source.labels()
    weights = conformation_weights(len(source), weights, source_labels)
    labels = draw_labels(n_images, len(source), weights, seed=int(seed), poses=poses, ctf=ctf,
                         shift_sigma=float(shift_sigma))
    n_chunks = math.ceil(n_images / per_chunk)
    bounds = [(c * per_chunk, min(n_images, (c + 1) * per_chunk)) for c in range(n_chunks)]

    def chunk_labels(c):
        start, stop = bounds[c]
        return {k: v[start:stop] for k, v in labels.items()}

    attrs = {
        "units": "contrast (dimensionless)" if ctf is not None else "phase shift (rad)",
        "pixel_size_angstrom": spec.pixel_size, "centre_angstrom": list(centre),
        "voltage_kilovolts": spec.voltage_in_kilovolts,
        "snr": "none" if snr is None else spec.snr,
        "ctf": "none" if ctf is None else "AstigmaticCTF, envelope exp(-B k^2/4)",
        "projection": (f"{projection} slice of stored volumes" if isinstance(source, StoredVolumes)
                       else "exact pixel averages of the posed atoms' gaussians"),
        "noise": "white gaussian, jax.random.normal(jax.random.key(noise_seed)) * noise_sigma",
    }
    coords = _coordinates(labels, source, spec)

    if store is None:
        render = dask.delayed(_render_chunk, pure=True, nout=2)
        parts = [render(source, spec, chunk_labels(c), None, c, projection)
                 for c in range(n_chunks)]
        sizes = [stop - start for start, stop in bounds]
        images = da.concatenate([
            da.from_delayed(p[0], (m,) + shape, dtype=np.dtype(dtype))
            for p, m in zip(parts, sizes)])
        sigmas = da.concatenate([
            da.from_delayed(p[1], (m,), dtype=np.float64) for p, m in zip(parts, sizes)])
        return xr.Dataset(
            {"images": (("particle", "y", "x"), images, attrs), "noise_sigma": ("particle", sigmas)},
            coords=coords)

    from .. import store as store_module
    from ..distributed import config

    location = store_module.as_location(store, storage_options)
    location.check()
    store_module.check_target(location)
    parameters = {
        "n_images": int(n_images), "shape": list(shape), "pixel_size": spec.pixel_size,
        "voltage_in_kilovolts": spec.voltage_in_kilovolts,
        "ctf": None if ctf is None else ctf.description(), "snr": spec.snr, "seed": int(seed),
        "shift_sigma": float(shift_sigma), "dtype": dtype, "images_per_chunk": per_chunk,
        "weights_sha256": hashlib.sha256(weights.tobytes()).hexdigest(),
        "poses": "uniform" if poses is None else hashlib.sha256(
            np.ascontiguousarray(labels["quaternion"]).tobytes()).hexdigest(),
        "source": source.description(), "centre": list(centre),
        "extra_b_factor": float(extra_b_factor),
        "projection": projection if isinstance(source, StoredVolumes) else "exact atoms",
    }
    layout = store_module.ImageStackLayout(int(n_images), shape, dtype, per_chunk)
    with store_module.acquire_lease(location, config.lease_ttl_seconds()):
        # The images' attributes are the store's (the root group's) attributes.
        store_module.prepare_store(location, layout, parameters, coords, attrs,
                                   overwrite=overwrite)
        todo = np.flatnonzero(~store_module.done_conformations(location, layout))
        _render_chunks(location, source, spec, chunk_labels, todo, projection,
                       dict(client=client, scheduler_address=scheduler_address, gpus=gpus,
                            n_workers=n_workers), progress)
    return open_particles(location)


def _render_chunks(location, source, spec: ImageSpec, chunk_labels, todo, projection: str,
                   cluster: dict, progress: bool) -> None:
    """Render and write the chunks `todo` on the Dask cluster `cluster` (the caller holds
    the store's lease)."""
    from ..distributed import connect

    if not len(todo):
        return
    with connect(cluster.get("client"), cluster.get("scheduler_address"), cluster.get("gpus"),
                 cluster.get("n_workers")) as dask_client:
        futures = [dask_client.submit(_render_chunk, source, spec, chunk_labels(c), location,
                                      int(c), projection, pure=False)
                   for c in todo]
        if progress:
            from distributed import progress as show_progress

            print(f"dashboard: {dask_client.dashboard_link}", file=sys.stderr, flush=True)
            show_progress(futures)
        dask_client.gather(futures)


def repair_particles(store, source, chunks, *, storage_options=None, client=None,
                     n_workers: int | None = None) -> None:
    """Render chunks of a particle store again from its stored labels (what `cryoensemble
    verify --repair` does to the bad and missing chunks): their markers, shards and
    empty records are removed first, under the store's writer lease.

    **Arguments:**

    - `store`: the particle store (path, URL or `StoreLocation`).
    - `source`: the ensemble source (or potential store) it was made from.
    - `chunks`: the chunk indices.
    - `storage_options`, `client`, `n_workers`: as for `simulate_images`.
    """
    from .. import store as store_module
    from ..distributed import config

    location = store_module.as_location(store, storage_options)
    parameters = store_module.read_parameters(location)
    if parameters is None or "images_per_chunk" not in parameters:
        raise ParticleStoreError(f"{location.url}: not a cryoensemble particle store")
    layout = store_module.ImageStackLayout.from_parameters(parameters)
    if isinstance(source, (str, os.PathLike)) or _is_location(source):
        source = StoredVolumes(source, storage_options)
    spec = ImageSpec(shape=tuple(layout.shape), pixel_size=float(parameters["pixel_size"]),
                     voltage_in_kilovolts=float(parameters["voltage_in_kilovolts"]),
                     uses_ctf=parameters["ctf"] is not None, snr=parameters["snr"],
                     dtype=layout.dtype, images_per_chunk=layout.images_per_chunk,
                     images_per_step=None, centre=tuple(parameters["centre"]),
                     extra_b_factor=float(parameters["extra_b_factor"]))
    projection = parameters["projection"]
    dataset = open_particles(location)
    names = ["conformation", "quaternion", "shift_x", "shift_y", "noise_seed"]
    names += list(CTF_LABELS) if spec.uses_ctf else []

    def chunk_labels(c):
        rows = slice(*layout.unit_range(int(c)))
        return {name: dataset[name][rows].values for name in names}

    chunks = sorted({int(c) for c in chunks})
    with store_module.acquire_lease(location, config.lease_ttl_seconds()):
        store_module.forget_conformations(location, chunks, layout=layout)
        _render_chunks(location, source, spec, chunk_labels, chunks, projection,
                       dict(client=client, n_workers=n_workers), progress=False)


def open_particles(store, storage_options=None):
    """Open a particle store (a path or URL) lazily as an xarray Dataset.

    **Arguments:**

    - `store`: a path, URL or `cryoensemble.store.StoreLocation`.
    - `storage_options`: fsspec options of a URL.
    """
    from .. import store as store_module

    location = store_module.as_location(store, storage_options)
    parameters = store_module.read_parameters(location)
    if parameters is None or "images_per_chunk" not in parameters:
        raise ParticleStoreError(f"{location.url}: not a cryoensemble particle store")
    dataset = store_module.open_store(location)
    dataset["images"].attrs.update({k: v for k, v in dataset.attrs.items()
                                    if k in _IMAGE_ATTRIBUTES})
    return dataset
