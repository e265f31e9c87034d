"""Voxel grids to and from MRC files, through mrcfile.

Arrays are indexed [z, y, x] as in MRC's default axis order. The header origin is set
so that voxel n // 2 of each axis sits at 0 A, the cryojax centring.
"""

import os

import numpy as np
from jaxtyping import Float


def read_array_from_mrc(
    filename: str | os.PathLike,
    loads_grid_spacing: bool = False,
    mmap: bool = False,
    permissive: bool = False,
):
    """Read a 2D or 3D MRC file (cryojax API).

    **Arguments:**

    - `filename`: the `.mrc`/`.mrcs` file.
    - `loads_grid_spacing`: also return the voxel size in A (an error if the axes have
      different spacings).
    - `mmap`: memory-map the data instead of reading it.
    - `permissive`: read files with a damaged header, as `mrcfile.open` does.

    **Returns:**

    The data indexed [z, y, x] (or [y, x]), or `(array, voxel_size)`.
    """
    import mrcfile

    path = os.fspath(filename)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    opener = mrcfile.mmap if mmap else mrcfile.open
    try:
        with opener(path, permissive=permissive) as mrc:
            array = mrc.data if mmap else np.asarray(mrc.data)
            size = mrc.voxel_size
    except ValueError as error:
        raise ValueError(f"{path}: not a valid MRC file ({error})") from None
    if not loads_grid_spacing:
        return array
    spacings = {float(size.x), float(size.y)} | ({float(size.z)} if array.ndim == 3 else set())
    if len(spacings) != 1:
        raise ValueError(f"{path}: anisotropic voxel size {tuple(size.tolist())} is not supported")
    return array, spacings.pop()


def write_volume_to_mrc(
    volume: Float[np.ndarray, "nz ny nx"],
    voxel_size: float,
    filename: str | os.PathLike,
    *,
    overwrite: bool = False,
) -> None:
    """Write a volume (indexed [z, y, x]) as float32 MRC with its voxel size in A.

    Refuses to replace an existing file unless `overwrite=True`.
    """
    import mrcfile

    path = os.fspath(filename)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path}: exists; pass overwrite=True to replace it")
    data = np.asarray(volume, dtype=np.float32)
    if data.ndim != 3:
        raise ValueError(f"write_volume_to_mrc: expected a 3D volume; got shape {data.shape}")
    with mrcfile.new(path, overwrite=overwrite) as mrc:
        mrc.set_data(data)
        mrc.voxel_size = float(voxel_size)
        nz, ny, nx = data.shape
        mrc.header.origin = (
            -(nx // 2) * float(voxel_size),
            -(ny // 2) * float(voxel_size),
            -(nz // 2) * float(voxel_size),
        )
