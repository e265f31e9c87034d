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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return MDAnalysis.Universe(topology, *trajectories)


def trajectory_elements(atoms) -> np.ndarray:
    """Atomic numbers of MDAnalysis atoms; 0 for massless virtual sites."""
    import gemmi

    try:
        symbols = [str(e).strip() for e in atoms.elements]
    except Exception:  # noqa: BLE001 - topologies without an element column
        symbols = [""] * len(atoms)
    numbers = []
    for symbol, name, residue in zip(symbols, atoms.names, atoms.resnames):
        element = symbol.capitalize() if symbol else infer_element(name, residue)
        numbers.append(0 if element is None else gemmi.Element(element).atomic_number)
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
        """The selected atoms; a one-line error naming a bad selection."""
        try:
            return self.universe().select_atoms(self.selection)
        except Exception as error:  # noqa: BLE001 - MDAnalysis raises several kinds
            raise EnsembleSourceError(
                f"selection {self.selection!r}: {str(error).splitlines()[0]}"
            ) from None

    def read(self, frames: np.ndarray, atom_mask: np.ndarray) -> np.ndarray:
        """Positions (len(frames), n_kept, 3) float32 of the atoms in `atom_mask`."""
        out = np.empty((len(frames), int(atom_mask.sum()), 3), np.float32)
        with self._lock:
            universe, atoms = self.universe(), self.atoms()
            for row, frame in enumerate(frames):
                universe.trajectory[int(frame)]
                out[row] = atoms.positions[atom_mask]
        return out
