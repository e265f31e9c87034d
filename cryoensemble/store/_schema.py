"""What a store contains: the xarray Dataset's variables, coordinates and attributes.

`potential` (conformation, z, y, x), A^-2; `z/y/x` in A at voxel centres; the source's
per-conformation labels; `rendered` (conformation,), whose chunk exists once that
conformation is completely written; `bookkeeping/empty_shard` (conformation, z-shard), a
subgroup array whose chunk exists where a shard of `potential` is all zeros (zarr stores
no object for it).
`cryoensemble.json` at the root names the store as ours and holds the parameters a rerun
must match; it is written first, so a store interrupted before its zarr metadata exists is
still recognised and finished.
"""

import datetime
import json
import os
import tempfile
import warnings
from typing import Any

import numpy as np

from ._layout import EMPTY_SHARD, IMAGES, POTENTIAL, RENDERED, ImageStackLayout, StoreLayout


IDENTITY = "cryoensemble.json"
FORMAT = StoreLayout.format
FORMATS = (StoreLayout.format, ImageStackLayout.format)
FORMAT_VERSION = 3  # 3: UDUNITS units, Conventions, OME-Zarr metadata

CONVENTIONS = "CF-1.11"
# UDUNITS spellings of the labels' units a source may give.
LABEL_UNITS = {"time_ps": "ps"}


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


def canonical(parameters: dict[str, Any]) -> dict[str, Any]:
    """Parameters as stored (a JSON round trip), with the store format they imply."""
    return json.loads(json.dumps(dict(parameters, store_format=FORMAT_VERSION)))


def identity_document(parameters: dict[str, Any], created: str | None = None,
                      format: str = FORMAT) -> bytes:
    created = created or datetime.datetime.now(datetime.timezone.utc).isoformat()
    return json.dumps({"format": format, "parameters": parameters, "created": created},
                      sort_keys=True, indent=1).encode()


def parse_identity(data: bytes | None) -> dict[str, Any] | None:
    """The identity document, or None when absent, torn or someone else's."""
    if data is None:
        return None
    try:
        document = json.loads(data)
    except ValueError:
        return None
    if not isinstance(document, dict) or document.get("format") not in FORMATS:
        return None
    return document


def parameters_from_root_metadata(data: bytes | None) -> dict[str, Any] | None:
    """`cryoensemble_parameters` of a root `zarr.json`, or None."""
    if data is None:
        return None
    try:
        text = json.loads(data).get("attributes", {}).get("cryoensemble_parameters")
        return None if text is None else json.loads(text)
    except (ValueError, AttributeError):
        return None


def differences(old: dict, new: dict, prefix="") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(differences(a, b, prefix + key + "."))
        elif a != b:
            out.append(f"{prefix}{key}: store has {a!r}, asked {b!r}")
    return out


def ome_metadata(shape: tuple[int, int, int], voxel_size: float) -> dict[str, Any]:
    """OME-Zarr 0.5 `ome` attributes: `potential` as a one-level multiscale image whose
    index (conformation, z, y, x) maps to (conformation, z, y, x in angstrom) by a scale
    and a translation (voxel i's centre at (i - n // 2) * voxel_size, as `z/y/x`)."""
    # NGFF orders custom axes before space axes; a conformation is neither time nor
    # channel, so its axis has no type.
    axes = [{"name": "conformation"}] + [
        {"name": axis, "type": "space", "unit": "angstrom"} for axis in ("z", "y", "x")
    ]
    transforms = [
        {"type": "scale", "scale": [1.0] + [float(voxel_size)] * 3},
        {"type": "translation",
         "translation": [0.0] + [float(-(n // 2) * voxel_size) for n in shape]},
    ]
    return {"version": "0.5", "multiscales": [{
        "name": POTENTIAL, "axes": axes,
        "datasets": [{"path": POTENTIAL, "coordinateTransformations": transforms}],
    }]}


def potential_dataset(layout: StoreLayout, parameters: dict[str, Any],
                      labels: dict[str, np.ndarray], attributes: dict[str, Any],
                      created: str, potential=None, rendered=None):
    """The Dataset a store holds: `potential` (a dask array; zeros unless given, chunked
    by shard), `rendered`, coordinates, labels and every attribute."""
    import dask.array as da
    import xarray as xr

    from ..coordinates.grids import make_coordinate_axis

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
    n = layout.n_conformations
    if potential is None:
        potential = da.zeros((n, nz, ny, nx), dtype=layout.dtype, chunks=layout.shards)
    if rendered is None:
        rendered = da.zeros((n,), dtype=np.uint8, chunks=1)
    dataset = xr.Dataset(
        {
            POTENTIAL: (("conformation", "z", "y", "x"), potential, {
                "units": "angstrom-2",
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
        dataset[axis].attrs.update(units="angstrom", long_name=f"{axis} of voxel centres")
    for name, unit in LABEL_UNITS.items():
        if name in dataset.coords:
            dataset[name].attrs["units"] = unit
    _stamp(dataset, parameters, attributes, created)
    dataset.attrs["ome"] = ome_metadata(layout.shape, voxel_size)
    return dataset


def _stamp(dataset, parameters: dict[str, Any], attributes: dict[str, Any], created: str):
    """The attributes every store carries: the caller's, CF `Conventions`, the parameters
    it was made with, its creation time and package versions."""
    dataset.attrs.update(attributes)
    dataset.attrs["Conventions"] = CONVENTIONS
    dataset.attrs["cryoensemble_parameters"] = json.dumps(parameters, sort_keys=True)
    dataset.attrs["created"] = created
    dataset.attrs["versions"] = json.dumps(package_versions(), sort_keys=True)




def _image_stack_template(layout: ImageStackLayout, coords):
    import dask.array as da
    import xarray as xr

    n, shape = layout.n_images, tuple(layout.shape)
    return xr.Dataset(
        {
            IMAGES: (("particle", "y", "x"),
                     da.zeros((n,) + shape, dtype=layout.dtype, chunks=-1)),
            "noise_sigma": ("particle", da.zeros(n, chunks=-1), {
                "long_name": "standard deviation of the image's white noise"}),
            RENDERED: (("chunk",), da.zeros((layout.n_units,), dtype=np.uint8, chunks=-1), {
                "long_name": "1 once the chunk's images are fully written",
            }),
        },
        coords=coords,
    )


def metadata_objects(layout, parameters: dict[str, Any],
                     labels: dict[str, Any], attributes: dict[str, Any],
                     created: str) -> dict[str, bytes]:
    """Every object of a new store except array data: the zarr metadata documents (the
    root `zarr.json` consolidated) and the coordinate chunks, built by xarray into a
    scratch folder so they are exactly what xarray writes. `labels`: per-conformation
    arrays of a `StoreLayout`, xarray coordinates of an `ImageStackLayout`."""
    import zarr

    import dask.array as da

    if isinstance(layout, ImageStackLayout):
        dataset = _image_stack_template(layout, labels)
        _stamp(dataset, parameters, attributes, created)
    else:
        # One dask chunk per array: nothing is computed here (compute=False), and xarray
        # builds a graph of the writes, which at one task per shard costs seconds per
        # thousand conformations.
        n, shape = layout.n_conformations, layout.shape
        dataset = potential_dataset(
            layout, parameters, labels, attributes, created,
            potential=da.zeros((n, *shape), dtype=layout.dtype, chunks=-1),
            rendered=da.zeros((n,), dtype=np.uint8, chunks=-1))
    n = layout.n_units
    with tempfile.TemporaryDirectory(prefix="cryoensemble-meta-") as scratch:
        with warnings.catch_warnings():
            # zarr notes that consolidation is an extension of format 3; readers here use it.
            warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
            dataset.to_zarr(scratch, mode="w-", compute=False, zarr_format=3,
                            encoding=layout.encoding(), consolidated=False)
            group, name = EMPTY_SHARD.split("/")
            zarr.open_group(scratch, mode="r+").require_group(group).create_array(
                name, shape=(n, layout.shards_per_unit), chunks=(1, 1), dtype="uint8", fill_value=0,
                attributes={"long_name": f"1 where a shard of {layout.array} is all zeros "
                            "(zarr stores no object for it)"})
            zarr.consolidate_metadata(scratch, zarr_format=3)
        objects = {}
        for directory, _, files in os.walk(scratch):
            for name in files:
                path = os.path.join(directory, name)
                key = os.path.relpath(path, scratch).replace(os.sep, "/")
                with open(path, "rb") as handle:
                    objects[key] = handle.read()
    return objects
