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

from ..atom_util import center_atom_positions
from ..errors import ElementInferenceError, StructureReadError
from ._bulk import bulk_centre_of


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
    - `labels`: per atom (chain, residue number, residue name, atom name), shape
      `(n_atoms, 4)` of str.
    - `charges`: formal charges, shape `(n_atoms,)`.
    """

    positions: Float[np.ndarray, "n_models n_atoms 3"]
    atomic_numbers: Int[np.ndarray, " n_atoms"]
    b_factors: Float[np.ndarray, "n_models n_atoms"]
    occupancies: Float[np.ndarray, "n_models n_atoms"]
    model_numbers: Int[np.ndarray, " n_models"]
    filename: str
    labels: np.ndarray | None = None
    charges: Int[np.ndarray, " n_atoms"] | None = None

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
    """Atoms of one gemmi model: keys, positions, element symbols (`?name` where the
    element could not be inferred, the file's own text where gemmi knows no such
    element), B-factors, occupancies, per-atom (serial, het, residue number) records and
    formal charges."""
    keys, positions, elements, b_factors, occupancies, records, charges = (
        [], [], [], [], [], [], [])
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
                    except ElementInferenceError:
                        element = "?" + atom.name  # refused later, unless selected away
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
                records.append((atom.serial, residue.het_flag == "H", residue.seqid.num))
                charges.append(atom.charge)
    return keys, positions, elements, b_factors, occupancies, records, charges


def _raw_element_symbols(path: str) -> dict[int, str]:
    """The element text of each atom serial as written in the file (gemmi reads an
    unknown symbol as `X`, which would hide what the file says)."""
    import gemmi

    raw = {}
    if _is_pdb_format(path):
        with _open_text(path) as handle:
            for line in handle:
                if line.startswith(("ATOM  ", "HETATM")):
                    try:
                        raw.setdefault(int(line[6:11]), line[76:78].strip())
                    except ValueError:
                        continue
        return raw
    block = gemmi.cif.read(path)[0]
    table = block.find("_atom_site.", ["id", "type_symbol"])
    for row in table:
        try:
            raw.setdefault(int(row[0]), gemmi.cif.as_string(row[1]))
        except ValueError:
            continue
    return raw


def _atom_label(key) -> str:
    chain, seqid, residue, name = key
    return f"atom {name} of {residue} {seqid}" + (f" chain {chain}" if chain.strip() else "")


def selection_mask(keys, elements, records, positions, selection: str, where: str) -> np.ndarray:
    """Which atoms an MDAnalysis `selection` string picks, as a boolean mask.

    The atoms read from a PDB/mmCIF file become an MDAnalysis Universe (names, residue
    names and numbers, chains as segments and chainIDs, elements, masses, record types),
    so `--select` has one syntax for every input kind.
    """
    import gemmi

    try:
        import MDAnalysis
    except ImportError:
        raise StructureReadError(
            f"{where}: selection {selection!r} needs MDAnalysis: pip install 'cryoensemble[md]'"
        ) from None
    n = len(keys)
    residue_keys, residue_index, chain_keys, chain_index = {}, [], {}, []
    for chain, seqid, residue, _ in keys:
        residue_index.append(residue_keys.setdefault((chain, seqid, residue), len(residue_keys)))
    for chain, _, _ in residue_keys:
        chain_index.append(chain_keys.setdefault(chain, len(chain_keys)))
    universe = MDAnalysis.Universe.empty(
        n, n_residues=len(residue_keys), n_segments=len(chain_keys),
        atom_resindex=np.asarray(residue_index), residue_segindex=np.asarray(chain_index),
        trajectory=True,
    )
    symbols = ["" if e.startswith("?") else e for e in elements]
    resnums = np.zeros(len(residue_keys), np.int64)
    for (serial, _het, num), r in zip(records, residue_index):
        resnums[r] = num
    universe.add_TopologyAttr("names", [k[3] for k in keys])
    universe.add_TopologyAttr("elements", symbols)
    universe.add_TopologyAttr("types", symbols)
    universe.add_TopologyAttr("masses", [gemmi.Element(e or "X").weight for e in symbols])
    universe.add_TopologyAttr("chainIDs", [k[0] for k in keys])
    universe.add_TopologyAttr("record_types", ["HETATM" if r[1] else "ATOM" for r in records])
    universe.add_TopologyAttr("resnames", [k[2] for k in residue_keys])
    universe.add_TopologyAttr("resids", resnums)
    universe.add_TopologyAttr("resnums", resnums)
    universe.add_TopologyAttr("segids", list(chain_keys))
    universe.atoms.positions = np.asarray(positions, dtype=np.float32)
    try:
        picked = universe.select_atoms(selection).indices
    except Exception as error:  # noqa: BLE001 - MDAnalysis raises several kinds
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise StructureReadError(f"{where}: selection {selection!r}: {message}") from None
    mask = np.zeros(n, bool)
    mask[picked] = True
    return mask


def _unknown_element_error(path, keys, elements) -> StructureReadError | None:
    import gemmi

    for key, element in zip(keys, elements):
        if element.startswith("?"):
            return ElementInferenceError(
                f"{path}: cannot infer the element of atom '{key[3]}' in residue '{key[2]}' "
                f"(the file has no element column); add the element column, or drop it "
                f"with --exclude 'name {key[3]}'"
            )
        if gemmi.Element(element).atomic_number == 0:
            symbol = element
            hint = (f"--exclude {symbol}" if symbol.isalpha() and len(symbol) <= 2
                    else f"--exclude 'name {key[3]}'")
            what = ("element X (unknown)" if symbol.upper() == "X"
                    else f"unknown element symbol {symbol!r}")
            return StructureReadError(
                f"{path}: {what} for {_atom_label(key)}; fix the element column or drop "
                f"such atoms with {hint}"
            )
    return None


def _duplicate_atom_error(path, keys, positions) -> StructureReadError | None:
    seen = {}
    for i, (key, xyz) in enumerate(zip(keys, np.round(np.asarray(positions), 3).tolist())):
        previous = seen.setdefault((key, tuple(xyz)), i)
        if previous != i:
            return StructureReadError(
                f"{path}: {_atom_label(key)} is listed twice at the same position; "
                "remove the duplicate record"
            )
    return None


def read_atomic_model(
    filename: str | os.PathLike,
    *,
    model_index: int | None = None,
    loads_hydrogens: bool = True,
    loads_waters: bool = True,
    loads_hetero: bool = True,
    selection: str | None = None,
) -> AtomicModel:
    """Read the atoms of a PDB or mmCIF/PDBx file (optionally gzipped) with gemmi.

    **Arguments:**

    - `filename`: `.pdb`, `.ent`, `.cif`, `.mmcif`, each optionally `.gz`.
    - `model_index`: read only this model (0-based); `None` reads all models.
    - `loads_hydrogens`, `loads_waters`, `loads_hetero`: keep hydrogens, waters and
      other hetero atoms (HETATM records).
    - `selection`: an MDAnalysis selection string (`"protein and not name H*"`,
      `"not element X"`), applied after the options above; needs MDAnalysis.

    Where atoms have alternative locations, the most occupied conformation is kept.
    Raises `StructureReadError` (a one-line message naming the file) for unreadable,
    empty or NaN input, models that hold different atoms, unknown elements (named as
    the file writes them, with the atom) and duplicate atom records.
    """
    import gemmi

    path = os.fspath(filename)
    if os.path.isdir(path):
        raise StructureReadError(
            f"{path}: is a directory; pass the files in it (a glob such as '{path}/*.pdb')"
        )
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
    keys, elements, records = first_keys, models[0][2], models[0][5]
    if "X" in elements:  # gemmi's name for any unknown symbol: say what the file says
        raw = _raw_element_symbols(path)
        elements = [raw.get(r[0]) or e if e == "X" else e for e, r in zip(elements, records)]
    keep = np.ones(len(keys), bool)
    if selection is not None and selection.strip() not in ("", "all"):
        keep = selection_mask(keys, elements, records, positions[0], selection, path)
        if not keep.any():
            raise StructureReadError(
                f"{path}: selection {selection!r} leaves no atoms (of {len(keys)})"
            )
    kept = np.flatnonzero(keep)
    keys = [keys[i] for i in kept]
    elements = [elements[i] for i in kept]
    records = [records[i] for i in kept]
    positions = positions[:, kept]
    error = (_unknown_element_error(path, keys, elements)
             or _duplicate_atom_error(path, keys, positions[0]))
    if error is not None:
        raise error
    atomic_numbers = np.asarray([gemmi.Element(e).atomic_number for e in elements])
    charges = np.asarray(models[0][6], dtype=np.int64)[kept]
    models = [(m[0], m[1], m[2], np.asarray(m[3])[kept], np.asarray(m[4])[kept]) for m in models]
    return AtomicModel(
        positions=positions,
        atomic_numbers=atomic_numbers.astype(np.int64),
        b_factors=np.asarray([m[3] for m in models], dtype=np.float64),
        occupancies=np.asarray([m[4] for m in models], dtype=np.float64),
        model_numbers=np.asarray([structure[i].num for i in indices], dtype=np.int64),
        filename=path,
        labels=np.asarray(keys, dtype=str),
        charges=charges,
    )


def _residue_number(seqid: str) -> int:
    """The number of a gemmi seqid string such as `'42'` or `'42A'` (insertion code)."""
    digits = seqid.strip().rstrip("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
    return int(digits) if digits.lstrip("-").isdigit() else 0


def atomic_model_to_mmdf(model: AtomicModel):
    """The atoms of an `AtomicModel` as a `pandas.DataFrame` in `mmdf.read`'s columns
    (one row per atom and model), for `mmdf_to_atoms` and `mmdf_to_topology`."""
    import gemmi
    import pandas as pd

    n_models, n_atoms = model.n_models, model.n_atoms
    labels = model.labels
    weights = np.asarray([gemmi.Element(int(z)).weight for z in model.atomic_numbers])
    symbols = [gemmi.Element(int(z)).name for z in model.atomic_numbers]
    tile = lambda a: np.tile(np.asarray(a), n_models)  # noqa: E731
    positions = model.positions.reshape(-1, 3)
    return pd.DataFrame(
        {
            "model": np.repeat(model.model_numbers, n_atoms),
            "chain": tile(labels[:, 0]),
            "residue": tile(labels[:, 2]),
            "residue_id": tile(np.asarray([_residue_number(r) for r in labels[:, 1]])),
            "atom": tile(labels[:, 3]),
            "element": tile(symbols),
            "atomic_number": tile(model.atomic_numbers),
            "atomic_weight": tile(weights),
            "x": positions[:, 0],
            "y": positions[:, 1],
            "z": positions[:, 2],
            "charge": tile(model.charges),
            "occupancy": model.occupancies.ravel(),
            "b_isotropic": model.b_factors.ravel(),
        }
    )


def _name_replacements(standardizes_names: bool):
    if not standardizes_names:
        return {}, {}
    from mdtraj.formats.pdb import PDBTrajectoryFile

    # mdtraj's own PDB name tables (pdbNames.xml), as its PDB reader applies them.
    PDBTrajectoryFile._loadNameReplacementTables()
    return PDBTrajectoryFile._residueNameReplacements, PDBTrajectoryFile._atomNameReplacements


def mmdf_to_topology(df, standardizes_names: bool = True, model_index: int | None = None):
    """An `mdtraj.Topology` of the atoms of a `mmdf.read` DataFrame (cryojax API).

    **Arguments:**

    - `df`: a DataFrame from `mmdf.read` (or `atomic_model_to_mmdf`).
    - `standardizes_names`: rename residues and atoms to PDB standard names as mdtraj's
      PDB reader does (so that selections such as `"protein"` work).
    - `model_index`: the model number (the `model` column) to take; `None`: all rows.
    """
    import mdtraj
    from mdtraj.core.element import Element

    rows = df if model_index is None else df[df["model"] == model_index]
    residue_names, atom_names = _name_replacements(standardizes_names)
    topology = mdtraj.Topology()
    chain_key = residue_key = None
    chain = residue = None
    for serial, row in enumerate(rows.itertuples(index=False)):
        if (row.model, row.chain) != chain_key:
            chain_key, residue_key = (row.model, row.chain), None
            chain = topology.add_chain()
        if (row.residue_id, row.residue) != residue_key:
            residue_key = (row.residue_id, row.residue)
            name = residue_names.get(row.residue, row.residue)
            residue = topology.add_residue(name, chain, resSeq=int(row.residue_id))
        atom_name = atom_names.get(residue.name, {}).get(row.atom, row.atom)
        element = Element.getByAtomicNumber(int(row.atomic_number))
        topology.add_atom(atom_name, element, residue, serial=serial, formal_charge=row.charge)
    topology.create_standard_bonds()
    return topology


def mmdf_to_atoms(
    df,
    *,
    loads_properties: bool = False,
    loads_b_factors: bool = False,
    center: bool = True,
    selection_string: str = "all",
    model_index: int | None = None,
    stack_models: bool = False,
    standardizes_names: bool = True,
    topology=None,
):
    """Atom positions, atomic numbers and properties of a `mmdf.read` DataFrame (cryojax API).

    See `read_atoms_from_pdb` for the arguments and the returns.
    """
    if len(df) == 0:
        raise ValueError("mmdf_to_atoms: the DataFrame holds no atoms")
    if model_index is not None:
        models = df["model"].unique().tolist()
        df = df[df["model"] == model_index]
        if len(df) == 0:
            raise ValueError(f"mmdf_to_atoms: no model number {model_index}; the models are {models}")
    stacked = model_index is None and stack_models
    groups = [df[df["model"] == m] for m in df["model"].unique()] if stacked else [df]
    sizes = {len(g) for g in groups}
    if len(sizes) != 1 or not all(
        np.array_equal(g["atomic_number"].to_numpy(), groups[0]["atomic_number"].to_numpy())
        for g in groups
    ):
        raise ValueError(
            "mmdf_to_atoms: stack_models=True needs every model to hold the same atoms; "
            f"the models hold {sorted(len(g) for g in groups)} atoms"
        )
    positions = np.stack([g[["x", "y", "z"]].to_numpy(dtype=float) for g in groups])
    atomic_numbers = groups[0]["atomic_number"].to_numpy().astype(np.int64)
    properties = {
        "masses": np.stack([g["atomic_weight"].to_numpy(dtype=float) for g in groups]),
        "b_factors": np.stack([g["b_isotropic"].to_numpy(dtype=float) for g in groups]),
        "charges": np.stack([g["charge"].to_numpy(dtype=float) for g in groups]),
    }
    if selection_string != "all":
        if topology is None:
            first = groups[0]["model"].iloc[0] if stacked else model_index
            topology = mmdf_to_topology(df, standardizes_names, model_index=first)
        selected = topology.select(selection_string)
        positions, atomic_numbers = positions[:, selected], atomic_numbers[selected]
        properties = {k: v[:, selected] for k, v in properties.items()}
    if center:
        positions = center_atom_positions(positions, properties["masses"], atom_axis=1)
    if positions.shape[0] == 1:
        positions = positions[0]
        properties = {k: v[0] for k, v in properties.items()}
    if loads_properties:
        return positions, atomic_numbers, properties
    if loads_b_factors:
        return positions, atomic_numbers, properties["b_factors"]
    return positions, atomic_numbers


def read_atoms_from_pdb(
    filename: str | pathlib.Path,
    *,
    loads_properties: bool = False,
    loads_b_factors: bool = False,
    center: bool = True,
    selection_string: str = "all",
    model_index: int | None = None,
    stack_models: bool = False,
    standardizes_names: bool = True,
    topology=None,
    loads_hydrogens: bool = True,
    loads_waters: bool = True,
    loads_hetero: bool = True,
):
    """Read atom positions and atomic numbers from a PDB or mmCIF file (cryojax API).

    Atoms are read by gemmi (`read_atomic_model`: gzip, the most occupied altloc, MD
    element inference, TIP4P virtual sites dropped), then selected, stacked and centred
    as cryojax's `read_atoms_from_pdb` does (`mmdf_to_atoms`).

    **Arguments:**

    - `filename`: `.pdb`/`.cif` and their `.gz` forms.
    - `loads_properties`: also return a dict of per-atom `masses` (Da), `b_factors`
      (A^2) and `charges`.
    - `loads_b_factors`: also return the B-factors (A^2) (ignored if `loads_properties`).
    - `center`: move each model's centre of mass to the origin.
    - `selection_string`: an mdtraj selection, e.g. `"protein and not element H"`.
    - `model_index`: the file's model number (as in its MODEL records, the `model` column
      of `mmdf`) to read; `None`: all models.
    - `stack_models`: with `model_index=None`, return the models stacked on a leading
      axis (they must hold the same atoms) instead of concatenated.
    - `standardizes_names`: standard PDB residue/atom names for the selection.
    - `topology`: an `mdtraj.Topology` for the selection (default: built from the file).
    - `loads_hydrogens`, `loads_waters`, `loads_hetero`: see `read_atomic_model`.

    **Returns:**

    `(positions, atomic_numbers)`, plus `properties` or `b_factors` as asked. Positions
    are (x, y, z) in A, shape `(n_atoms, 3)`, or `(n_models, n_atoms, 3)` when stacked.
    """
    model = read_atomic_model(
        filename,
        loads_hydrogens=loads_hydrogens,
        loads_waters=loads_waters,
        loads_hetero=loads_hetero,
    )
    return mmdf_to_atoms(
        atomic_model_to_mmdf(model),
        loads_properties=loads_properties,
        loads_b_factors=loads_b_factors,
        center=center,
        selection_string=selection_string,
        model_index=model_index,
        stack_models=stack_models,
        standardizes_names=standardizes_names,
        topology=topology,
    )


def read_topology_from_pdb(
    filename: str | pathlib.Path, model_index: int | None = None, standardizes_names: bool = True
):
    """The `mdtraj.Topology` of a PDB or mmCIF file (see `mmdf_to_topology`)."""
    return mmdf_to_topology(
        atomic_model_to_mmdf(read_atomic_model(filename)), standardizes_names, model_index
    )


def bulk_centre(
    positions: Float[np.ndarray, "n_atoms 3"],
) -> tuple[np.ndarray, int, float]:
    """The centre of the bulk of the atoms, which a few stray atoms cannot move.

    The bulk is every atom within four times the median distance to the median position
    (at least 10 A); the centre is the mean of the bulk, so for a molecule with no stray
    atom it is the plain mean position.

    **Returns:** `(centre, n_stray, extent)`: the centre (x, y, z) in A, the number of
    atoms outside the bulk, and the largest distance in A of any atom from the centre.
    """
    positions = np.asarray(positions)
    if positions.dtype not in (np.float32, np.float64):
        positions = positions.astype(np.float64)
    # Medians, norms and the mean in float64, as NumPy's own functions give them, without
    # converting millions of positions at once (`_bulk`).
    return bulk_centre_of(positions.reshape(-1, 3))
