"""Atom utilities on numpy arrays (cryojax's `atom_util`): centring and grouping by element.

Atoms run along `atom_axis`; axes before it are batch axes (models, frames).
"""

import jax
import numpy as np
from jaxtyping import Float, Int, PyTree


def center_atom_positions(
    atom_positions: Float[np.ndarray, "... n_atoms 3"],
    atom_masses: Float[np.ndarray, "... n_atoms"] | None = None,
    atom_axis: int = 0,
) -> Float[np.ndarray, "... n_atoms 3"]:
    """Move the centre of mass (or, without masses, the mean position) to the origin.

    **Arguments:**

    - `atom_positions`: (x, y, z) in A along the last axis.
    - `atom_masses`: masses of the atoms, the shape of `atom_positions` without its last
      axis; `None` centres on the mean position.
    - `atom_axis`: the axis of `atom_positions` that runs over atoms; each batch entry
      (axes before it) is centred on its own.
    """
    positions = np.asarray(atom_positions)
    if positions.ndim < 2 or positions.shape[-1] != 3 or not 0 <= atom_axis < positions.ndim - 1:
        raise ValueError(
            f"center_atom_positions: atom_positions must be (..., n_atoms, 3) with atom_axis "
            f"{atom_axis} before the last axis; got shape {positions.shape}"
        )
    if atom_masses is None:
        centre = positions.mean(axis=atom_axis)
    else:
        masses = np.asarray(atom_masses, dtype=float)
        if masses.shape != positions.shape[:-1]:
            raise ValueError(
                f"center_atom_positions: atom_masses has shape {masses.shape}; expected "
                f"{positions.shape[:-1]}"
            )
        centre = (positions * masses[..., None]).sum(axis=atom_axis) / masses.sum(
            axis=atom_axis
        )[..., None]
    return positions - np.expand_dims(centre, axis=atom_axis)


def split_atoms_by_element(
    atomic_numbers: Int[np.ndarray, " n_atoms"],
    atom_pytree: PyTree[np.ndarray],
    atom_axis: int = 0,
) -> tuple[PyTree[tuple[np.ndarray, ...]], Int[np.ndarray, " n_elements"]]:
    """Group per-atom arrays by element, e.g. for `IndependentAtomVolume.from_tabulated_parameters`.

    **Arguments:**

    - `atomic_numbers`: shape `(n_atoms,)`.
    - `atom_pytree`: an array (positions `(n_atoms, 3)`, B-factors `(n_atoms,)`, ...) or a
      pytree of them, each with its atoms along `atom_axis`.
    - `atom_axis`: the axis that runs over atoms (leading axes are batch axes).

    **Returns:**

    `(split, elements)`: `atom_pytree` with every array replaced by a tuple of arrays,
    one per element in increasing atomic number, and those atomic numbers (pass them to
    `PengScatteringFactorParameters` or `LobatoScatteringFactorParameters`).
    """
    atomic_numbers = np.asarray(atomic_numbers)
    if atomic_numbers.ndim != 1:
        raise ValueError(
            f"split_atoms_by_element: atomic_numbers must be 1D; got shape {atomic_numbers.shape}"
        )
    elements = np.unique(atomic_numbers)
    n_atoms = atomic_numbers.shape[0]

    def split(array) -> tuple[np.ndarray, ...]:
        array = np.asarray(array)
        if array.ndim <= atom_axis or array.shape[atom_axis] != n_atoms:
            raise ValueError(
                f"split_atoms_by_element: an array of shape {array.shape} has no axis "
                f"{atom_axis} of the {n_atoms} atoms"
            )
        return tuple(
            np.take(array, np.flatnonzero(atomic_numbers == z), axis=atom_axis) for z in elements
        )

    return jax.tree.map(split, atom_pytree), elements
