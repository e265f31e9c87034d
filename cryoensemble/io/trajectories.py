"""MD trajectories through MDAnalysis (extra `md`): a reader that opens once, takes
turns between threads and travels to Dask workers as its file names."""

import threading
import warnings

import numpy as np

from ..errors import EnsembleSourceError
from .structures import infer_element


def _open_universe(topology: str, trajectories: tuple):
    try:
        import MDAnalysis
    except ImportError:
        raise ImportError("Trajectories need MDAnalysis: pip install 'cryoensemble[md]'") from None
    import os

    topologies = (".psf", ".prmtop", ".parm7", ".top", ".itp", ".tpr")
    for path in trajectories:
        if path.lower().endswith(topologies):
            raise EnsembleSourceError(
                f"{path}: a topology ({os.path.splitext(path)[1][1:].upper()}) given as a "
                "trajectory; pass it with --topology and the coordinates (DCD, XTC, ...) as inputs"
            )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            # Nothing guessed: elements come from the topology's own columns
            # (`trajectory_elements` ignores guessed ones), and guessing types and masses
            # is most of a large topology's opening time in every worker. A selection that
            # needs them guesses them then (`TrajectoryReader.atoms`).
            universe = MDAnalysis.Universe(topology, *trajectories, to_guess=())
        except Exception as error:  # noqa: BLE001 - MDAnalysis raises many kinds
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            files = " + ".join((topology, *trajectories))
            raise EnsembleSourceError(f"{files}: MDAnalysis cannot read it ({message})") from None
    if trajectories and universe.trajectory.n_atoms != len(universe.atoms):
        raise EnsembleSourceError(
            f"{trajectories[0]}: {universe.trajectory.n_atoms} atoms per frame, but the "
            f"topology {topology} has {len(universe.atoms)}"
        )
    return universe


def _given(atoms, attribute: str):
    """An attribute the topology file itself provides (not one MDAnalysis guessed), or
    None."""
    try:
        values = getattr(atoms, attribute)
        guessed = getattr(getattr(atoms.universe._topology, attribute), "is_guessed", False)
    except Exception:  # noqa: BLE001 - MDAnalysis raises NoDataError, AttributeError, ...
        return None
    return None if guessed else values


def _weights_table() -> dict[str, float]:
    import gemmi

    return {gemmi.Element(z).name: gemmi.Element(z).weight for z in range(1, 104)}


def _element_from_mass(name: str, residue: str, mass: float, table: dict) -> str | None:
    """The element whose standard atomic weight matches `mass` (within 0.6) among the
    ones the atom name can spell (`SIA` -> Si or S; `CA` -> Ca or C); None if none does
    (hydrogen mass repartitioning moves weight between atoms, so names decide then)."""
    letters = name.strip().lstrip("0123456789").upper()
    candidates = [letters[:2].capitalize(), letters[:1]] if name else list(table)
    matches = [c for c in candidates if c in table and abs(table[c] - mass) < 0.6]
    if not name and len(matches) != 1:
        matches = sorted(matches, key=lambda c: abs(table[c] - mass))[:1]
    return matches[0] if matches else None


def trajectory_elements(atoms, where: str = "topology") -> np.ndarray:
    """Atomic numbers of MDAnalysis atoms; 0 for massless virtual sites.

    The element column where the topology has one; else the atom name, with the
    topology's own masses deciding between the elements a name can spell (a PSF's `SIA`
    of mass 28.09 is silicon, not sulfur); a topology with masses but no names (LAMMPS
    data) by mass alone.
    """
    import gemmi

    symbols = _given(atoms, "elements")
    symbols = ([str(e).strip() for e in symbols] if symbols is not None
               else [""] * len(atoms))
    masses = _given(atoms, "masses")
    names = _given(atoms, "names")
    residues = _given(atoms, "resnames")
    if names is None and masses is None and not all(symbols):
        raise EnsembleSourceError(
            f"{where}: atoms have no names, elements or masses to tell their elements; "
            "give a topology with names (PSF, PDB, GRO, TPR, ...)"
        )
    table = _weights_table()
    numbers = []
    for i, symbol in enumerate(symbols):
        name = "" if names is None else str(names[i])
        residue = "" if residues is None else str(residues[i])
        mass = None if masses is None else float(masses[i])
        if symbol:
            element = symbol.capitalize()
        elif mass is not None and mass <= 0.0:
            element = None  # a massless virtual site
        else:
            element = None if mass is None else _element_from_mass(name, residue, mass, table)
            if element is None and not name:
                raise EnsembleSourceError(
                    f"{where}: atom {i + 1} has no name and its mass {mass} matches no element"
                )
            if element is None:
                try:
                    element = infer_element(name, residue)
                except Exception as error:  # noqa: BLE001 - ElementInferenceError
                    raise EnsembleSourceError(f"{where}: {error}") from None
        number = 0 if element is None else gemmi.Element(element).atomic_number
        if element is not None and number == 0:
            raise EnsembleSourceError(
                f"{where}: unknown element {element!r} for atom {i + 1} ({name or 'no name'}); "
                f"drop such atoms with --exclude {element}"
            )
        numbers.append(number)
    return np.asarray(numbers, dtype=np.int64)


class TrajectoryReader:
    """The frames of `trajectories` over `topology`, atoms chosen by an MDAnalysis
    `selection`.

    The Universe is opened on first use and kept; its cursor is shared, so reads from
    several threads (GPU workers run several tasks at once) take turns. Pickled, the
    reader is its file names and selection: each process opens its own.
    """

    def __init__(self, topology: str, trajectories: tuple, selection: str = "all"):
        self.topology = topology
        self.trajectories = tuple(trajectories)
        self.selection = selection
        self._universe = None
        self._lock = threading.Lock()

    def __getstate__(self):
        return {"topology": self.topology, "trajectories": self.trajectories,
                "selection": self.selection}

    def __setstate__(self, state):
        self.__init__(**state)

    def universe(self):
        if self._universe is None:
            self._universe = _open_universe(self.topology, self.trajectories)
        return self._universe

    def atoms(self):
        """The selected atoms; a one-line error naming a bad selection. A selection by
        atom type or mass on a topology that lacks them gets MDAnalysis' guesses (as a
        Universe opened with its defaults would have them)."""
        universe = self.universe()
        try:
            return universe.select_atoms(self.selection)
        except Exception as error:  # noqa: BLE001 - MDAnalysis raises several kinds
            failure = error
        missing = [a for a in ("types", "masses") if not hasattr(universe.atoms, a)]
        if missing:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    universe.guess_TopologyAttrs(to_guess=missing)
            except Exception:  # noqa: BLE001 - nothing to guess from: the selection's error stands
                pass
            else:
                try:
                    return universe.select_atoms(self.selection)
                except Exception as error:  # noqa: BLE001
                    failure = error
        raise EnsembleSourceError(
            f"selection {self.selection!r}: {str(failure).splitlines()[0]}"
        ) from None

    def read(self, frames: np.ndarray, atom_mask: np.ndarray) -> np.ndarray:
        """Positions (len(frames), n_kept, 3) float32 of the atoms in `atom_mask`.

        Evenly spaced runs of frames are read with MDAnalysis' `timeseries` (one call per
        run: no per-frame seek or Timestep copy); a run that fails is read again frame by
        frame, so the error names the frame that cannot be read.
        """
        frames = np.asarray(frames, dtype=np.int64)
        out = np.empty((len(frames), int(atom_mask.sum()), 3), np.float32)
        with self._lock:
            universe = self.universe()
            kept = self.atoms()[atom_mask]
            for first, stop in _runs(frames):
                run = frames[first:stop]
                step = int(run[1] - run[0]) if len(run) > 1 else 1
                try:
                    with warnings.catch_warnings():
                        # MDAnalysis 2.x warns that `asel` becomes `atomgroup` in 3.0.
                        warnings.simplefilter("ignore", DeprecationWarning)
                        out[first:stop] = universe.trajectory.timeseries(
                            kept, start=int(run[0]), stop=int(run[-1]) + 1, step=step,
                            order="fac")
                except Exception:  # noqa: BLE001 - found again below, frame by frame
                    for row, frame in enumerate(run, start=first):
                        out[row] = self._frame(universe, kept, int(frame))
        return out

    def _frame(self, universe, kept, frame: int) -> np.ndarray:
        try:
            universe.trajectory[frame]
        except Exception as error:  # noqa: BLE001 - truncated files raise several kinds
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise EnsembleSourceError(
                f"{self.trajectories[0]}: cannot read frame {frame} ({message}); "
                "is the file truncated?"
            ) from None
        return kept.positions


def _runs(frames: np.ndarray) -> list[tuple[int, int]]:
    """`(first, stop)` rows of `frames` that form evenly spaced ascending runs."""
    starts = [0] if len(frames) else []
    for i in range(1, len(frames)):
        step, first = frames[i] - frames[i - 1], starts[-1]
        if step <= 0 or (i - first > 1 and step != frames[first + 1] - frames[first]):
            starts.append(i)
    return list(zip(starts, starts[1:] + [len(frames)]))
