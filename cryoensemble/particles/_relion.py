"""Export a particle store to RELION 3.1+: `.mrcs` stacks and a star file with an
optics table, read by RELION, cryoSPARC and cryoDRGN."""

import os

import numpy as np
import pandas as pd

from ._simulate import ParticleStoreError, open_particles


def export_relion(
    store, directory: str, *, images_per_stack: int = 10000, name: str = "particles",
    overwrite: bool = False, storage_options: dict | None = None,
) -> str:
    """Write `DIRECTORY/NAME_00000.mrcs, ...` and `DIRECTORY/NAME.star`.

    RELION's particles have inverted contrast (RELION's CTF is the negative of
    cryojax's), so the stacks hold the negated images. Angles are RELION's rot, tilt,
    psi; `rlnOriginXAngst/YAngst` are the negated shifts (RELION's origin is where the
    particle centre must move to reach the box centre); `rlnClassNumber` is the
    conformation index + 1.

    **Arguments:**

    - `store`: a rendered particle store (a path, URL or `StoreLocation`).
    - `directory`: the output folder (created).
    - `images_per_stack`: images per `.mrcs` file.
    - `name`: the stem of the file names.
    - `overwrite`: replace existing files.
    - `storage_options`: fsspec options of a `store` URL.

    **Returns:** the path of the star file.
    """
    import mrcfile
    import starfile

    from ..store import read_parameters

    if images_per_stack < 1:
        raise ValueError(f"images_per_stack: must be >= 1; got {images_per_stack}")
    dataset = open_particles(store, storage_options)
    parameters = read_parameters(store, storage_options)
    missing = int((~dataset["rendered"].values.astype(bool)).sum())
    if missing:
        raise ParticleStoreError(f"{store}: {missing} chunks not rendered yet; rerun the simulation")
    star_path = os.path.join(directory, f"{name}.star")
    if os.path.exists(star_path) and not overwrite:
        raise FileExistsError(f"{star_path}: exists; pass overwrite=True to replace it")
    os.makedirs(directory, exist_ok=True)
    n = dataset.sizes["particle"]
    ny, nx = parameters["shape"]
    if ny != nx:
        raise ParticleStoreError(f"{store}: RELION needs square images; got {ny}x{nx}")
    pixel_size = parameters["pixel_size"]
    names = []
    for stack, start in enumerate(range(0, n, images_per_stack)):
        stop = min(n, start + images_per_stack)
        file_name = f"{name}_{stack:05d}.mrcs"
        images = -np.asarray(dataset["images"][start:stop].values, dtype=np.float32)
        with mrcfile.new(os.path.join(directory, file_name), overwrite=True) as mrc:
            mrc.set_data(images)
            mrc.set_image_stack()
            mrc.voxel_size = pixel_size
        names.extend(f"{i + 1:06d}@{file_name}" for i in range(stop - start))

    coords = dataset.coords
    ctf = parameters["ctf"]
    optics = {
        "rlnOpticsGroup": [1], "rlnOpticsGroupName": ["opticsGroup1"],
        "rlnVoltage": [parameters["voltage_in_kilovolts"]],
        "rlnImagePixelSize": [pixel_size], "rlnImageSize": [nx], "rlnImageDimensionality": [2],
    }
    if ctf is not None:
        optics["rlnSphericalAberration"] = [float(coords["spherical_aberration"][0])]
        optics["rlnAmplitudeContrast"] = [float(coords["amplitude_contrast"][0])]
        optics["rlnCtfDataAreCtfPremultiplied"] = [0]
        for label in ("spherical_aberration", "amplitude_contrast"):
            if np.ptp(coords[label].values) > 0:
                raise ParticleStoreError(f"{store}: {label} varies between particles; "
                                         "RELION holds it per optics group")
    particles = {
        "rlnImageName": names,
        "rlnAngleRot": coords["angle_rot"].values,
        "rlnAngleTilt": coords["angle_tilt"].values,
        "rlnAnglePsi": coords["angle_psi"].values,
        "rlnOriginXAngst": -coords["shift_x"].values,
        "rlnOriginYAngst": -coords["shift_y"].values,
    }
    if ctf is not None:
        particles.update({
            "rlnDefocusU": coords["defocus_u"].values,
            "rlnDefocusV": coords["defocus_v"].values,
            "rlnDefocusAngle": coords["defocus_angle"].values,
            "rlnPhaseShift": coords["phase_shift"].values,
            "rlnCtfBfactor": coords["ctf_b_factor"].values,
            "rlnCtfScalefactor": np.ones(n),
        })
    particles["rlnClassNumber"] = coords["conformation"].values.astype(np.int64) + 1
    particles["rlnRandomSubset"] = np.arange(n) % 2 + 1
    particles["rlnOpticsGroup"] = np.ones(n, np.int64)
    starfile.write(
        {"optics": pd.DataFrame(optics), "particles": pd.DataFrame(particles)},
        star_path,
    )
    return star_path
