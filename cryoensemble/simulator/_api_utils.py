"""cryojax's convenience functions: a volume from a structure file, voxels from atoms."""

import os
from collections.abc import Callable
from typing import Any, Literal

import jax.numpy as jnp
import numpy as np

from ..atom_util import split_atoms_by_element
from ..constants.scattering_factors import (
    LobatoScatteringFactorParameters,
    PengScatteringFactorParameters,
)
from ..coordinates import make_coordinate_grid, make_frequency_slice
from ..ndimage.splines import compute_spline_coefficients
from ._volume.base_volume import AbstractAtomVolume
from ._volume.gaussian_mixture import GaussianMixtureVolume
from ._volume.independent_atom import IndependentAtomVolume
from ._volume.voxel_volumes import (
    FourierVoxelGridVolume,
    FourierVoxelSplineVolume,
    RealVoxelCloudVolume,
    RealVoxelGridVolume,
)
from ._volume_rendering.base_rendering import AbstractVolumeRenderFn


def _identity(b_factors, atomic_numbers):
    del atomic_numbers
    return b_factors


def load_tabulated_volume(
    path_or_mmdf,
    *,
    output_type: type[IndependentAtomVolume] | type[GaussianMixtureVolume] = IndependentAtomVolume,
    tabulation: Literal["peng", "lobato"] = "peng",
    include_b_factors: bool = False,
    b_factor_fn: Callable[[Any, Any], Any] = _identity,
    selection_string: str = "all",
    pdb_options: dict[str, Any] = {},
) -> IndependentAtomVolume | GaussianMixtureVolume:
    """An atom volume from tabulated electron scattering factors (cryojax API).

    Call it outside `jit` and pass the volume to compiled functions.

    **Arguments:**

    - `path_or_mmdf`: a PDB/mmCIF file (read as `cryoensemble.io.read_atoms_from_pdb`
      reads it) or a `pandas.DataFrame` from `mmdf.read`.
    - `output_type`: `IndependentAtomVolume` (one scattering factor per element) or
      `GaussianMixtureVolume` (Peng's five gaussians per atom).
    - `tabulation`: `'peng'` (Peng 1996) or `'lobato'` (Lobato 2014; not a gaussian
      mixture, so `IndependentAtomVolume` only).
    - `include_b_factors`: add the file's B-factors (per atom for a gaussian mixture, the
      mean of each element for independent atoms).
    - `b_factor_fn`: `new_b = b_factor_fn(b, atomic_numbers)`, applied to those B-factors.
    - `selection_string`: an mdtraj atom selection.
    - `pdb_options`: other keywords of `mmdf_to_atoms` / `read_atoms_from_pdb`.
    """
    # The one place the core reads files: cryojax has this function in `simulator`.
    import pandas as pd

    from ..io import atomic_model_to_mmdf, mmdf_to_atoms, read_atomic_model

    if isinstance(path_or_mmdf, (str, os.PathLike)):
        reader_keys = ("loads_hydrogens", "loads_waters", "loads_hetero")
        reader = {k: v for k, v in pdb_options.items() if k in reader_keys}
        pdb_options = {k: v for k, v in pdb_options.items() if k not in reader_keys}
        frame = atomic_model_to_mmdf(read_atomic_model(path_or_mmdf, **reader))
    elif isinstance(path_or_mmdf, pd.DataFrame):
        frame = path_or_mmdf
    else:
        raise TypeError(
            "load_tabulated_volume: path_or_mmdf must be a path or a pandas DataFrame from "
            f"mmdf.read; got {type(path_or_mmdf).__name__}"
        )
    if tabulation not in ("peng", "lobato"):
        raise ValueError(f"load_tabulated_volume: tabulation must be 'peng' or 'lobato'; got {tabulation!r}")
    if output_type is GaussianMixtureVolume and tabulation != "peng":
        raise ValueError(
            f"load_tabulated_volume: tabulation={tabulation!r} is not a gaussian mixture; "
            "use tabulation='peng' for a GaussianMixtureVolume"
        )
    if output_type not in (GaussianMixtureVolume, IndependentAtomVolume):
        raise ValueError(
            "load_tabulated_volume: output_type must be GaussianMixtureVolume or "
            f"IndependentAtomVolume; got {output_type}"
        )
    positions, atomic_numbers, properties = mmdf_to_atoms(
        frame, loads_properties=True, selection_string=selection_string, **pdb_options
    )
    if np.ndim(positions) != 2:
        raise ValueError(
            "load_tabulated_volume: needs one set of atoms (n_atoms, 3); got positions of "
            f"shape {np.shape(positions)} (pass pdb_options={{'model_index': ...}})"
        )
    b_factors = np.asarray(properties["b_factors"])
    if output_type is GaussianMixtureVolume:
        extra = (
            jnp.asarray(b_factor_fn(b_factors, atomic_numbers), dtype=float)
            if include_b_factors
            else None
        )
        return GaussianMixtureVolume.from_tabulated_parameters(
            positions, PengScatteringFactorParameters(atomic_numbers), extra_b_factors=extra
        )
    (positions_by_element, b_by_element), elements = split_atoms_by_element(
        atomic_numbers, (positions, b_factors)
    )
    parameters = (
        PengScatteringFactorParameters(elements)
        if tabulation == "peng"
        else LobatoScatteringFactorParameters(elements)
    )
    b_factor_by_element = (
        tuple(jnp.asarray(b_factor_fn(np.mean(b), z), dtype=float) for b, z in zip(b_by_element, elements))
        if include_b_factors
        else None
    )
    return IndependentAtomVolume.from_tabulated_parameters(
        positions_by_element, parameters, b_factor_by_element=b_factor_by_element
    )


def render_voxel_volume(
    atom_volume: AbstractAtomVolume,
    render_fn: AbstractVolumeRenderFn,
    *,
    output_type: type = FourierVoxelGridVolume,
):
    """A voxel volume rendered from an atom volume (cryojax API).

    **Arguments:**

    - `atom_volume`: e.g. a `GaussianMixtureVolume` or an `IndependentAtomVolume`.
    - `render_fn`: a renderer of a cubic grid (`render_fn.shape = (N, N, N)`), e.g.
      `AutoVolumeRenderFn((N, N, N), voxel_size)`.
    - `output_type`: `FourierVoxelGridVolume`, `FourierVoxelSplineVolume`,
      `RealVoxelGridVolume` or `RealVoxelCloudVolume`.

    **Returns:**

    A volume of exactly `output_type`.
    """
    shape = tuple(render_fn.shape)
    if len(set(shape)) != 1:
        raise ValueError(f"render_voxel_volume: needs a cubic render_fn.shape (N, N, N); got {shape}")
    if output_type in (FourierVoxelGridVolume, FourierVoxelSplineVolume):
        dim = shape[0]
        spectrum = render_fn(atom_volume, outputs_real_space=False, outputs_rfft=False, fftshifted=True)
        frequency_slice = make_frequency_slice((dim, dim), outputs_rfftfreqs=False)
        frequency_slice = frequency_slice.astype(spectrum.real.dtype)
        if output_type is FourierVoxelGridVolume:
            return FourierVoxelGridVolume(spectrum, frequency_slice)
        return FourierVoxelSplineVolume(compute_spline_coefficients(spectrum), frequency_slice)
    if output_type in (RealVoxelGridVolume, RealVoxelCloudVolume):
        real = render_fn(atom_volume, outputs_real_space=True)
        coordinates = make_coordinate_grid(shape).astype(real.dtype)
        if output_type is RealVoxelGridVolume:
            return RealVoxelGridVolume(real, coordinates)
        return RealVoxelCloudVolume.from_real_voxel_grid(real, coordinate_grid_in_pixels=coordinates)
    raise ValueError(
        "render_voxel_volume: output_type must be FourierVoxelGridVolume, "
        f"FourierVoxelSplineVolume, RealVoxelGridVolume or RealVoxelCloudVolume; got {output_type}"
    )
