"""A potential store's conformations as MRC files (ChimeraX, RELION, any map viewer)."""

import os

import numpy as np

from ._layout import POTENTIAL, RENDERED
from ._writer import as_location, open_store, read_parameters


def parse_conformations(text: str, n: int) -> list[int]:
    """`"0,5,10-20"` (ranges inclusive) as sorted unique indices below `n`."""
    indices = set()
    for part in text.split(","):
        bounds = part.strip().split("-")
        try:
            values = [int(b) for b in bounds]
        except ValueError:
            values = []
        if len(values) not in (1, 2) or values[0] > values[-1] or values[0] < 0:
            raise ValueError(f"conformations: expected indices and ranges such as 0,5,10-20; "
                             f"got {part.strip()!r}")
        if values[-1] >= n:
            raise ValueError(f"conformations: {values[-1]} is out of range (the store has {n})")
        indices.update(range(values[0], values[-1] + 1))
    return sorted(indices)


def export_mrc(store, directory: str | os.PathLike, *, conformations=None,
               storage_options: dict | None = None, overwrite: bool = False) -> list[str]:
    """Write each chosen conformation of a potential store as
    `DIRECTORY/conformation_NNNNN.mrc` (float32, potential in A^-2).

    The header's voxel size is the store's, and its origin (A, x y z) puts each voxel
    where the input model's atoms are: voxel i of an axis at
    `(i - n // 2) * voxel_size + centre`, `centre` being what the render subtracted from
    the positions. So the maps overlay their models in ChimeraX; RELION reads the voxel
    size (it takes the box centre as the origin).

    **Arguments:**

    - `store`: a path or URL of a store made by `render_ensemble`.
    - `directory`: the output folder (created).
    - `conformations`: indices (a sequence, or text such as `"0,5,10-20"`, ranges
      inclusive); default all.
    - `storage_options`: for the store's filesystem.
    - `overwrite`: replace existing files.

    **Returns:** the paths written, in conformation order.
    """
    import mrcfile

    location = as_location(store, storage_options)
    parameters = read_parameters(location)
    if parameters is None:
        raise ValueError(f"{location}: not a cryoensemble potential store")
    dataset = open_store(location)
    n = dataset.sizes["conformation"]
    if conformations is None:
        indices = list(range(n))
    elif isinstance(conformations, str):
        indices = parse_conformations(conformations, n)
    else:
        indices = sorted({int(i) for i in conformations})
        if indices and not (0 <= indices[0] and indices[-1] < n):
            raise ValueError(f"conformations: indices must lie in [0, {n}); got {indices}")
    rendered = dataset[RENDERED].values.astype(bool)
    missing = [i for i in indices if not rendered[i]]
    if missing:
        raise ValueError(f"{location}: conformations {missing[:10]} not rendered yet; "
                         "rerun the render first")
    directory = os.fspath(directory)
    width = max(5, len(str(n - 1)))
    paths = [os.path.join(directory, f"conformation_{i:0{width}d}.mrc") for i in indices]
    existing = [p for p in paths if os.path.exists(p)]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]}: exists; pass overwrite to replace it")
    os.makedirs(directory, exist_ok=True)

    voxel_size = float(parameters["voxel_size"])
    centre_xyz = np.asarray(parameters.get("centre", (0.0, 0.0, 0.0)), np.float64)
    nz, ny, nx = (int(s) for s in parameters["shape"])
    origin = centre_xyz - np.array([nx // 2, ny // 2, nz // 2]) * voxel_size
    for index, path in zip(indices, paths):
        data = dataset[POTENTIAL].isel(conformation=index).values.astype(np.float32)
        with mrcfile.new(path, overwrite=overwrite) as mrc:
            mrc.set_data(data)
            mrc.voxel_size = voxel_size
            mrc.header.origin = tuple(float(v) for v in origin)
            mrc.header.label[1] = f"cryoensemble conformation {index} of {location}"[:80]
            mrc.header.nlabl = 2
    return paths
