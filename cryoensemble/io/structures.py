"""Atomic models from PDB and mmCIF/PDBx files (plain or gzipped), through gemmi.

MD programs (CHARMM, GROMACS) often write PDB files with no element column; gemmi then
guesses from the atom name's alignment, which turns CHARMM's `CA`, `HG1` and `CD` into
calcium, mercury and cadmium. For such files elements are inferred from atom and residue
names the way MD tools do (first letter of the name, ions by residue name).
"""

import dataclasses
import gzip
import os
import pathlib

import numpy as np
from jaxtyping import Float, Int

from ..errors import ElementInferenceError, StructureReadError


# Residue names of water in PDB, CHARMM, AMBER and GROMACS files.
WATER_RESIDUES = frozenset(
    {"HOH", "WAT", "H2O", "DOD", "SOL", "TIP", "TIP3", "TIP4", "TIP5", "TP3", "T3P", "T4P",
     "SPC", "SPCE", "OW"}
)
# Ion residue names of MD force fields, mapped to their element.
ION_RESIDUES = {
    "NA": "Na", "SOD": "Na", "NA+": "Na", "CL": "Cl", "CLA": "Cl", "CL-": "Cl", "K": "K",
    "POT": "K", "K+": "K", "MG": "Mg", "MG2": "Mg", "CA": "Ca", "CAL": "Ca", "CA2": "Ca",
    "ZN": "Zn", "ZN2": "Zn", "FE": "Fe", "FE2": "Fe", "CS": "Cs", "CES": "Cs", "LI": "Li",
    "LIT": "Li", "RB": "Rb", "BR": "Br", "IOD": "I", "F": "F",
}
# Massless virtual sites of 4- and 5-site water models and lone pairs: no electrons.
VIRTUAL_SITES = frozenset({"MW", "OM", "EPW", "EP", "EP1", "EP2", "LP", "LP1", "LP2", "MN1", "MN2"})
_ORGANIC_FIRST_LETTERS = {"H": "H", "D": "H", "C": "C", "N": "N", "O": "O", "S": "S", "P": "P"}


@dataclasses.dataclass(frozen=True)
class AtomicModel:
    """Atoms of one or more models of a structure (all models hold the same atoms).

    **Fields:**

    - `positions`: (x, y, z) in A, shape `(n_models, n_atoms, 3)`.
    - `atomic_numbers`: shape `(n_atoms,)`.
    - `b_factors`: isotropic B-factors in A^2, shape `(n_models, n_atoms)`.
    - `occupancies`: shape `(n_models, n_atoms)`.
    - `model_numbers`: the file's model numbers, shape `(n_models,)`.
    - `filename`: where the atoms came from.
    """

    positions: Float[np.ndarray, "n_models n_atoms 3"]
    atomic_numbers: Int[np.ndarray, " n_atoms"]
    b_factors: Float[np.ndarray, "n_models n_atoms"]
    occupancies: Float[np.ndarray, "n_models n_atoms"]
    model_numbers: Int[np.ndarray, " n_models"]
    filename: str

    @property
    def n_models(self) -> int:
        return self.positions.shape[0]

    @property
    def n_atoms(self) -> int:
        return self.positions.shape[1]


def infer_element(atom_name: str, residue_name: str) -> str | None:
    """The element of an atom in an MD-written file, from its atom and residue names.

    Ions are recognised by residue name (`SOD`, `CLA`, `MG`, ...); every other atom takes
    the element of its name's first letter among H (D), C, N, O, S, P, after any leading
    digits (`1HB` is hydrogen). Virtual sites (`MW` of TIP4P, lone pairs) give `None`.
    Raises `ElementInferenceError` otherwise.
    """
    name = atom_name.strip().upper().lstrip("0123456789")
    residue = residue_name.strip().upper()
    if name in VIRTUAL_SITES:
        return None
    if residue in ION_RESIDUES and (
        name == residue or name.startswith(ION_RESIDUES[residue].upper())
    ):
        return ION_RESIDUES[residue]
    if name and name[0] in _ORGANIC_FIRST_LETTERS:
        return _ORGANIC_FIRST_LETTERS[name[0]]
    raise ElementInferenceError(
        f"cannot infer the element of atom '{atom_name.strip()}' in residue "
        f"'{residue_name.strip()}' (the file has no element column)"
    )


def _open_text(path: str):
    return gzip.open(path, "rt", errors="replace") if path.endswith(".gz") else open(
        path, errors="replace"
    )


def _is_pdb_format(path: str) -> bool:
    stem = path[:-3] if path.endswith(".gz") else path
    return not stem.lower().endswith((".cif", ".mmcif", ".mcif"))


def _pdb_lacks_element_column(path: str) -> bool:
    """True if any ATOM/HETATM record of a PDB file has blank element columns 77-78."""
    with _open_text(path) as handle:
        for line in handle:
            if line.startswith(("ATOM  ", "HETATM")) and not line[76:78].strip():
                return True
    return False


def _select_altlocs(residue) -> list:
    """Atoms of a residue with one alternative conformation: the most occupied one."""
    occupancy: dict[str, float] = {}
    for atom in residue:
        if atom.altloc != "\0":
            occupancy[atom.altloc] = occupancy.get(atom.altloc, 0.0) + atom.occ
    keep = max(occupancy, key=occupancy.get) if occupancy else None
    return [atom for atom in residue if atom.altloc in ("\0", keep)]


def _read_model(model, path, infer, loads_hydrogens, loads_waters, loads_hetero):
    keys, positions, elements, b_factors, occupancies = [], [], [], [], []
    for chain in model:
        for residue in chain:
            is_water = residue.is_water() or residue.name.upper() in WATER_RESIDUES
            if is_water and not loads_waters:
                continue
            if residue.het_flag == "H" and not is_water and not loads_hetero:
                continue
            for atom in _select_altlocs(residue):
                if infer:
                    try:
                        element = infer_element(atom.name, residue.name)
                    except ElementInferenceError as error:
                        raise ElementInferenceError(f"{path}: {error}") from None
                    if element is None:  # a virtual site
                        continue
                else:
                    element = atom.element.name
                if element in ("H", "D") and not loads_hydrogens:
                    continue
                keys.append((chain.name, str(residue.seqid), residue.name, atom.name))
                positions.append((atom.pos.x, atom.pos.y, atom.pos.z))
                elements.append(element)
                b_factors.append(atom.b_iso)
                occupancies.append(atom.occ)
    return keys, positions, elements, b_factors, occupancies


def read_atomic_model(
    filename: str | os.PathLike,
    *,
    model_index: int | None = None,
    loads_hydrogens: bool = True,
    loads_waters: bool = True,
    loads_hetero: bool = True,
) -> AtomicModel:
    """Read the atoms of a PDB or mmCIF/PDBx file (optionally gzipped) with gemmi.

    **Arguments:**

    - `filename`: `.pdb`, `.ent`, `.cif`, `.mmcif`, each optionally `.gz`.
    - `model_index`: read only this model (0-based); `None` reads all models.
    - `loads_hydrogens`, `loads_waters`, `loads_hetero`: keep hydrogens, waters and
      other hetero atoms (HETATM records).

    Where atoms have alternative locations, the most occupied conformation is kept.
    Raises `StructureReadError` (a one-line message naming the file) for unreadable,
    empty or NaN input, or models that hold different atoms.
    """
    import gemmi

    path = os.fspath(filename)
    if not os.path.isfile(path):
        raise StructureReadError(f"{path}: no such file")
    try:
        structure = gemmi.read_structure(path)
    except (RuntimeError, ValueError, OSError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise StructureReadError(f"{path}: not a readable PDB/mmCIF file ({message})") from None
    if len(structure) == 0 or all(model.count_atom_sites() == 0 for model in structure):
        raise StructureReadError(
            f"{path}: no atom records (empty, or not a PDB/mmCIF file)"
        )
    indices = range(len(structure)) if model_index is None else [model_index]
    if model_index is not None and not (0 <= model_index < len(structure)):
        raise StructureReadError(
            f"{path}: model_index {model_index} is out of range (the file has "
            f"{len(structure)} models)"
        )
    infer = _is_pdb_format(path) and _pdb_lacks_element_column(path)

    models = []
    for i in indices:
        models.append(
            _read_model(structure[i], path, infer, loads_hydrogens, loads_waters, loads_hetero)
        )
    first_keys = models[0][0]
    if not first_keys:
        raise StructureReadError(f"{path}: no atoms left after selection")
    for i, model in zip(indices, models):
        if model[0] != first_keys:
            raise StructureReadError(
                f"{path}: model {structure[i].num} holds different atoms than model "
                f"{structure[indices[0]].num} ({len(model[0])} vs {len(first_keys)} atoms)"
            )
    positions = np.asarray([m[1] for m in models], dtype=np.float64)
    if not np.all(np.isfinite(positions)):
        raise StructureReadError(f"{path}: atom coordinates contain NaN or infinity")
    atomic_numbers = np.asarray([gemmi.Element(e).atomic_number for e in models[0][2]])
    if np.any(atomic_numbers == 0):
        bad = sorted({e for e, z in zip(models[0][2], atomic_numbers) if z == 0})
        raise StructureReadError(f"{path}: unknown element symbols {bad}")
    return AtomicModel(
        positions=positions,
        atomic_numbers=atomic_numbers.astype(np.int64),
        b_factors=np.asarray([m[3] for m in models], dtype=np.float64),
        occupancies=np.asarray([m[4] for m in models], dtype=np.float64),
        model_numbers=np.asarray([structure[i].num for i in indices], dtype=np.int64),
        filename=path,
    )


def read_atoms_from_pdb(
    filename: str | pathlib.Path,
    *,
    center: bool = True,
    loads_b_factors: bool = False,
    model_index: int | None = None,
    loads_hydrogens: bool = True,
    loads_waters: bool = True,
    loads_hetero: bool = True,
):
    """Read atom positions and atomic numbers from a PDB or mmCIF file (cryojax API).

    **Arguments:**

    - `filename`: `.pdb`/`.cif` and their `.gz` forms.
    - `center`: subtract the mean atom position (one shift for all models, so the
      motion between models is kept).
    - `loads_b_factors`: also return the B-factors (A^2).
    - `model_index`: read this model only; `None` reads every model.
    - `loads_hydrogens`, `loads_waters`, `loads_hetero`: see `read_atomic_model`.

    **Returns:**

    `(positions, atomic_numbers)` or `(positions, atomic_numbers, b_factors)`. Positions
    are (x, y, z) in A with shape `(n_atoms, 3)` for a single model, or
    `(n_models, n_atoms, 3)` when several models are read (B-factors likewise).
    """
    model = read_atomic_model(
        filename,
        model_index=model_index,
        loads_hydrogens=loads_hydrogens,
        loads_waters=loads_waters,
        loads_hetero=loads_hetero,
    )
    positions, b_factors = model.positions, model.b_factors
    if center:
        positions = positions - positions.reshape(-1, 3).mean(axis=0)
    if model.n_models == 1:
        positions, b_factors = positions[0], b_factors[0]
    if loads_b_factors:
        return positions, model.atomic_numbers, b_factors
    return positions, model.atomic_numbers
