"""Ensemble sources: where the conformations of an ensemble come from.

A source is a small picklable description (file names, frame ranges, a seed). The client
asks it for cheap metadata (how many conformations, the atoms, per-conformation labels);
each Dask task asks it for its own range of conformations with `read(start, stop)`, so a
worker reads its slice straight from the file and the client never holds the ensemble.
All conformations of a source hold the same atoms, in the same order.
"""

import csv
import glob
import hashlib
import os
from abc import ABC, abstractmethod
from typing import Any

import numpy as np
from jaxtyping import Float, Int

from .errors import EnsembleSourceError
from .io import TrajectoryReader, read_atomic_model, trajectory_elements


def file_sha256(path: str) -> str:
    """The sha256 of a file, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class AbstractEnsembleSource(ABC):
    """Conformations (atom positions in A) plus per-conformation labels.

    Subclasses set `atomic_numbers` (n_atoms,) and implement `__len__`, `read`, `labels`,
    `description` and `input_files`.
    """

    atomic_numbers: Int[np.ndarray, " n_atoms"]

    @abstractmethod
    def __len__(self) -> int:
        """The number of conformations."""

    @abstractmethod
    def read(self, start: int, stop: int) -> Float[np.ndarray, "n n_atoms 3"]:
        """Positions (x, y, z) in A of conformations `[start, stop)`, float32."""

    @abstractmethod
    def labels(self) -> dict[str, np.ndarray]:
        """Per-conformation coordinates for the store, each of shape (len(self),)."""

    @abstractmethod
    def description(self) -> dict[str, Any]:
        """JSON-able parameters that define the conformations (compared on resume)."""

    def atoms_description(self) -> dict[str, Any]:
        """JSON-able parameters that define the atoms (elements, order, mixtures) but not
        their positions: workers key what they plan per atom by it, so a render of other
        frames of the same atoms reuses it. By default the whole `description`."""
        return self.description()

    def input_files(self) -> list[str]:
        """Files the conformations are read from (hashed into the store's attributes)."""
        return []

    def mixture(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The (amplitudes, variances) in A and A^2, `(n_atoms, n_gaussians)`, that every
        conformation shares, for sources that carry their own; None (the default) for
        tabulated atoms, rendered from `atomic_numbers` with Peng et al. (1996)."""
        return None

    @property
    def n_atoms(self) -> int:
        return int(len(self.atomic_numbers))

    def check(self) -> None:
        """Raise a one-line error for what would fail inside a task, reading what is cheap
        on the client: by default the first and last conformations (finite coordinates,
        a trajectory as long as its frames)."""
        self.read(0, 1)
        if len(self) > 1:
            self.read(len(self) - 1, len(self))

    # Models parsed from structure files, kept per source object (a few), never pickled:
    # each worker parses what its tasks read.
    _MODELS_KEPT = 8

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_models"}

    def reuse_open_files(self, other: "AbstractEnsembleSource") -> None:
        """Take over what `other` has opened or parsed (models, an MDAnalysis Universe):
        `other` is a source of the same class and atoms (`atoms_description`) read from
        the same unchanged files, e.g. other frames of the same trajectory, so a worker
        rendering them does not open the files again. By default the parsed models."""
        if "_models" in other.__dict__:
            self.__dict__["_models"] = other.__dict__["_models"]

    def _read_model(self, path: str, model_index):
        """The atomic model of `path` (all models if `model_index` is None) with the
        source's atom `selection`."""
        models = self.__dict__.setdefault("_models", {})
        key = (path, model_index)
        if key not in models:
            if len(models) >= self._MODELS_KEPT:
                models.pop(next(iter(models)))
            models[key] = read_atomic_model(path, model_index=model_index, **dict(self.selection))
        return models[key]

    def _check_range(self, start: int, stop: int) -> None:
        if not (0 <= start < stop <= len(self)):
            raise IndexError(f"{type(self).__name__}: range [{start}, {stop}) outside 0..{len(self)}")


def _checked_positions(positions: np.ndarray, where: str) -> np.ndarray:
    if not np.all(np.isfinite(positions)):
        raise EnsembleSourceError(f"{where}: atom coordinates contain NaN or infinity")
    return np.ascontiguousarray(positions, dtype=np.float32)


def _selection(loads_hydrogens, loads_waters, loads_hetero, selection=None) -> tuple:
    options = (
        ("loads_hydrogens", loads_hydrogens),
        ("loads_waters", loads_waters),
        ("loads_hetero", loads_hetero),
    )
    # Recorded only when given, so stores made before `selection` existed still resume.
    if selection is not None and selection.strip() not in ("", "all"):
        options += (("selection", selection),)
    return options


class MultiModelSource(AbstractEnsembleSource):
    """Every model of one multi-model PDB/mmCIF file (an NMR ensemble, say).

    **Arguments:**

    - `path`: the structure file.
    - `loads_hydrogens`, `loads_waters`, `loads_hetero`, `selection` (an MDAnalysis
      selection string): atom selection, as in `cryoensemble.io.read_atomic_model`.
    """

    def __init__(self, path, *, loads_hydrogens=True, loads_waters=True, loads_hetero=True,
                 selection=None):
        self.path = os.path.abspath(os.fspath(path))
        self.selection = _selection(loads_hydrogens, loads_waters, loads_hetero, selection)
        model = self._read_model(self.path, None)
        self.atomic_numbers = model.atomic_numbers
        self.model_numbers = model.model_numbers

    def __len__(self):
        return len(self.model_numbers)

    def read(self, start, stop):
        self._check_range(start, stop)
        return _checked_positions(
            self._read_model(self.path, None).positions[start:stop], self.path
        )

    def labels(self):
        return {"model": self.model_numbers.astype(np.int64)}

    def description(self):
        return {"kind": "models", "path": self.path, "selection": dict(self.selection)}

    def input_files(self):
        return [self.path]


def read_weights_csv(path: str) -> dict[str, float]:
    """A CSV of `file,weight` rows (a header row is allowed) to {basename or path: weight}."""
    weights = {}
    with open(path, newline="") as handle:
        for row_number, row in enumerate(csv.reader(handle), start=1):
            if not row or row[0].startswith("#"):
                continue
            if len(row) < 2:
                raise EnsembleSourceError(f"{path}: row {row_number} needs 'file,weight'")
            try:
                weights[row[0].strip()] = float(row[1])
            except ValueError:
                if row_number == 1:
                    continue  # header
                raise EnsembleSourceError(
                    f"{path}: row {row_number}: weight {row[1]!r} is not a number"
                ) from None
    return weights


class StructureFilesSource(AbstractEnsembleSource):
    """One conformation per structure file (a folder of predicted models, say).

    **Arguments:**

    - `paths`: file names or glob patterns (sorted within each pattern).
    - `weights`: optional per-file weights: a sequence aligned with the files, or a CSV
      path of `file,weight` rows (file by name or path).
    - `model_index`: which model of each file (default the first).
    - atom selection as in `cryoensemble.io.read_atomic_model` (`selection`: an
      MDAnalysis selection string).
    """

    def __init__(
        self, paths, *, weights=None, model_index=0, loads_hydrogens=True, loads_waters=True,
        loads_hetero=True, selection=None,
    ):
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        files = []
        for pattern in map(os.fspath, paths):
            matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
            if not matches:
                raise EnsembleSourceError(f"{pattern}: no files match")
            files.extend(os.path.abspath(m) for m in matches)
        if not files:
            raise EnsembleSourceError("StructureFilesSource: no input files")
        self.paths = files
        self.model_index = model_index
        self.selection = _selection(loads_hydrogens, loads_waters, loads_hetero, selection)
        self.atomic_numbers = self._model(0).atomic_numbers
        self.weights = self._weights(weights)

    def check(self):
        """Every file holds the same atoms as the first (parsed here, before any task)."""
        for i in range(len(self.paths)):
            self._model(i)
        super().check()

    def _weights(self, weights):
        if weights is None:
            return None
        values = self._weight_values(weights)
        where = weights if isinstance(weights, (str, os.PathLike)) else "weights"
        bad = np.flatnonzero(~np.isfinite(values) | (values < 0))
        if bad.size:
            raise EnsembleSourceError(
                f"{where}: weight {values[bad[0]]} of {os.path.basename(self.paths[bad[0]])} "
                "is not a finite number >= 0"
            )
        if not values.sum() > 0:
            raise EnsembleSourceError(f"{where}: every weight is 0")
        return values

    def _weight_values(self, weights):
        if isinstance(weights, (str, os.PathLike)):
            table = read_weights_csv(os.fspath(weights))
            values = []
            for path in self.paths:
                for key in (path, os.path.basename(path)):
                    if key in table:
                        values.append(table[key])
                        break
                else:
                    raise EnsembleSourceError(f"{weights}: no weight for {os.path.basename(path)}")
            return np.asarray(values, dtype=np.float64)
        values = np.asarray(weights, dtype=np.float64)
        if values.shape != (len(self.paths),):
            raise EnsembleSourceError(
                f"StructureFilesSource: {values.size} weights for {len(self.paths)} files"
            )
        return values

    def _model(self, i):
        model = self._read_model(self.paths[i], self.model_index)
        reference = getattr(self, "atomic_numbers", model.atomic_numbers)
        if not np.array_equal(model.atomic_numbers, reference):
            raise EnsembleSourceError(
                f"{self.paths[i]}: atoms differ from {self.paths[0]} "
                f"({model.n_atoms} vs {len(reference)} atoms, or other elements/order)"
            )
        return model

    def __len__(self):
        return len(self.paths)

    def read(self, start, stop):
        self._check_range(start, stop)
        return np.stack(
            [_checked_positions(self._model(i).positions[0], self.paths[i]) for i in range(start, stop)]
        )

    def labels(self):
        labels = {"file": np.asarray([os.path.basename(p) for p in self.paths])}
        if self.weights is not None:
            labels["weight"] = self.weights
        return labels

    def description(self):
        return {
            "kind": "files", "paths": self.paths, "model_index": self.model_index,
            "selection": dict(self.selection),
            "weights": None if self.weights is None else self.weights.tolist(),
        }

    def input_files(self):
        return list(self.paths)


def parse_frames(text: str | None) -> slice:
    """`START:STOP:STEP` (each part optional) to a slice."""
    if text is None or text == "":
        return slice(None)
    parts = text.split(":")
    if len(parts) > 3:
        raise ValueError(f"frames: expected START:STOP:STEP; got {text!r}")
    try:
        values = [int(p) if p.strip() else None for p in parts]
    except ValueError:
        raise ValueError(f"frames: expected integers in START:STOP:STEP; got {text!r}") from None
    if len(values) == 1:
        return slice(values[0], values[0] + 1 if values[0] is not None else None)
    if len(values) == 3 and values[2] is not None and values[2] < 1:
        raise ValueError(f"frames: STEP must be >= 1; got {text!r}")
    return slice(*values)


def _frames_text(frames: slice) -> str:
    return ":".join("" if v is None else str(v) for v in (frames.start, frames.stop, frames.step))


class TrajectorySource(AbstractEnsembleSource):
    """Frames of an MD trajectory, read through MDAnalysis (extra `md`).

    **Arguments:**

    - `topology`: PSF, PDB, GRO, TPR, ... file.
    - `trajectories`: one or more DCD, XTC, TRR, ... files (concatenated).
    - `frames`: a slice or `"START:STOP:STEP"` of the frames to render.
    - `selection`: an MDAnalysis selection string (default all atoms). Massless virtual
      sites (TIP4P `MW`) are dropped.
    """

    def __init__(self, topology, trajectories, *, frames=None, selection="all"):
        if isinstance(trajectories, (str, os.PathLike)):
            trajectories = [trajectories]
        self.topology = os.path.abspath(os.fspath(topology))
        self.trajectories = tuple(os.path.abspath(os.fspath(t)) for t in trajectories)
        for path in (self.topology, *self.trajectories):
            if not os.path.isfile(path):
                raise EnsembleSourceError(f"{path}: no such file")
        self.selection = selection
        frames = parse_frames(frames) if isinstance(frames, (str, type(None))) else frames
        self.reader = TrajectoryReader(self.topology, self.trajectories, selection)
        universe = self.reader.universe()
        n_frames = universe.trajectory.n_frames
        for bound in (frames.start, frames.stop):
            if bound is not None and not -n_frames <= bound <= n_frames:
                raise EnsembleSourceError(
                    f"{self.trajectories[0]}: frames {_frames_text(frames)} reach past the "
                    f"trajectory's {n_frames} frames"
                )
        self.frame_indices = np.arange(n_frames)[frames]
        if len(self.frame_indices) == 0:
            raise EnsembleSourceError(
                f"{self.trajectories[0]}: no frames selected by {_frames_text(frames)} "
                f"(the trajectory has {n_frames})"
            )
        numbers = trajectory_elements(self.reader.atoms(), self.topology)
        self.atom_mask = numbers > 0
        self.atomic_numbers = numbers[self.atom_mask]
        if self.atomic_numbers.size == 0:
            raise EnsembleSourceError(f"{self.topology}: selection {selection!r} holds no atoms")
        self.frames_text = f"{frames.start}:{frames.stop}:{frames.step}"
        dt = float(getattr(universe.trajectory, "dt", 0.0) or 0.0)
        t0 = float(universe.trajectory[0].time) if universe.trajectory.n_frames else 0.0
        self.times_ps = t0 + dt * self.frame_indices

    def __len__(self):
        return len(self.frame_indices)

    def read(self, start, stop):
        self._check_range(start, stop)
        out = self.reader.read(self.frame_indices[start:stop], self.atom_mask)
        return _checked_positions(out, self.trajectories[0])

    def labels(self):
        return {"frame": self.frame_indices.astype(np.int64), "time_ps": self.times_ps}

    def description(self):
        return {
            "kind": "trajectory", "topology": self.topology,
            "trajectories": list(self.trajectories), "frames": self.frames_text,
            "selection": self.selection,
        }

    def atoms_description(self):
        return {key: value for key, value in self.description().items() if key != "frames"}

    def reuse_open_files(self, other):
        # Same topology, trajectories and selection: the open Universe serves any frames.
        self.reader = other.reader

    def input_files(self):
        return [self.topology, *self.trajectories]


class MorphSource(AbstractEnsembleSource):
    """A linear morph between two conformations of the same atoms.

    Conformation i is `(1 - t_i) A + t_i B` with `t_i = i / (n - 1)`.

    **Arguments:**

    - `start`, `end`: structure files (first model of each), same atoms in the same order.
    - `n_conformations`: number of steps, endpoints included (>= 2).
    """

    def __init__(self, start, end, n_conformations: int, *, loads_hydrogens=True,
                 loads_waters=True, loads_hetero=True, selection=None):
        if n_conformations < 2:
            raise EnsembleSourceError(f"MorphSource: n_conformations must be >= 2; got {n_conformations}")
        self.paths = (os.path.abspath(os.fspath(start)), os.path.abspath(os.fspath(end)))
        self.selection = _selection(loads_hydrogens, loads_waters, loads_hetero, selection)
        a, b = (self._read_model(p, 0) for p in self.paths)
        if not np.array_equal(a.atomic_numbers, b.atomic_numbers):
            raise EnsembleSourceError(
                f"{self.paths[1]}: atoms differ from {self.paths[0]} "
                f"({b.n_atoms} vs {a.n_atoms} atoms, or other elements/order)"
            )
        self.atomic_numbers = a.atomic_numbers
        self.n_conformations = int(n_conformations)

    def __len__(self):
        return self.n_conformations

    def read(self, start, stop):
        self._check_range(start, stop)
        a, b = (self._read_model(p, 0).positions[0] for p in self.paths)
        t = self.labels()["morph_t"][start:stop, None, None]
        return _checked_positions((1 - t) * a + t * b, self.paths[0])

    def labels(self):
        return {"morph_t": np.linspace(0.0, 1.0, self.n_conformations)}

    def description(self):
        return {"kind": "morph", "paths": list(self.paths), "n": self.n_conformations,
                "selection": dict(self.selection)}

    def input_files(self):
        return list(self.paths)


class ParametrizationSource(AbstractEnsembleSource):
    """A stochastic volume model sampled with N random keys.

    Sample i is `parametrization.to_representation(keys[i])` with
    `keys = jax.random.split(jax.random.key(seed), n_samples)`; it must be a
    `GaussianMixtureVolume` whose amplitudes and variances do not depend on the key
    (only positions vary; anything else is an error).

    **Arguments:**

    - `parametrization`: an `AbstractVolumeParametrization` (picklable: it is sent to
      the workers).
    - `n_samples`: the number of conformations.
    - `seed`: the integer seed of the keys.
    """

    def __init__(self, parametrization, n_samples: int, *, seed: int = 0):
        import jax

        from .simulator import GaussianMixtureVolume

        self.parametrization = parametrization
        self.n_samples = int(n_samples)
        self.seed = int(seed)
        first = parametrization.to_representation(jax.random.key(self.seed))
        if not isinstance(first, GaussianMixtureVolume):
            raise EnsembleSourceError(
                f"ParametrizationSource: to_representation gives {type(first).__name__}; "
                "a GaussianMixtureVolume is needed"
            )
        self.amplitudes = np.asarray(first.amplitudes)
        self.variances = np.asarray(first.variances)
        self.atomic_numbers = np.zeros(first.positions.shape[0], np.int64)  # not tabulated

    def __len__(self):
        return self.n_samples

    def read(self, start, stop):
        import jax

        self._check_range(start, stop)
        keys = jax.random.split(jax.random.key(self.seed), self.n_samples)[start:stop]
        out = []
        for key in keys:
            volume = self.parametrization.to_representation(key)
            if not (np.array_equal(np.asarray(volume.amplitudes), self.amplitudes)
                    and np.array_equal(np.asarray(volume.variances), self.variances)):
                raise EnsembleSourceError(
                    "ParametrizationSource: amplitudes or variances change between samples; "
                    "only positions may vary"
                )
            out.append(np.asarray(volume.positions))
        return _checked_positions(np.stack(out), "ParametrizationSource")

    def labels(self):
        return {"sample": np.arange(self.n_samples, dtype=np.int64)}

    def description(self):
        return {"kind": "parametrization", "type": type(self.parametrization).__qualname__,
                "n": self.n_samples, "seed": self.seed,
                "mixture_sha256": hashlib.sha256(
                    self.amplitudes.tobytes() + self.variances.tobytes()).hexdigest()}

    def mixture(self):
        """The shared (amplitudes, variances) of every sample."""
        return self.amplitudes, self.variances


class CycledSource(AbstractEnsembleSource):
    """Another source's conformations repeated cyclically to `n_conformations`.

    Conformation i is conformation `i % len(source)` of `source`; the label `origin` says
    which. For benchmarks at scale and for data sets that revisit a trajectory.
    """

    def __init__(self, source: AbstractEnsembleSource, n_conformations: int):
        if n_conformations < 1:
            raise EnsembleSourceError(f"CycledSource: n_conformations must be >= 1; got {n_conformations}")
        self.source = source
        self.n_conformations = int(n_conformations)
        self.atomic_numbers = source.atomic_numbers

    def __len__(self):
        return self.n_conformations

    def read(self, start, stop):
        self._check_range(start, stop)
        n = len(self.source)
        indices = np.arange(start, stop) % n
        # Read each contiguous run of the underlying source once.
        breaks = np.flatnonzero(np.diff(indices) != 1) + 1
        parts = [self.source.read(int(g[0]), int(g[-1]) + 1) for g in np.split(indices, breaks)]
        return np.concatenate(parts)

    def labels(self):
        n = len(self.source)
        labels = {f"origin_{k}": np.asarray(v)[np.arange(self.n_conformations) % n]
                  for k, v in self.source.labels().items()}
        labels["origin"] = np.arange(self.n_conformations) % n
        return labels

    def description(self):
        return {"kind": "cycled", "n": self.n_conformations, "source": self.source.description()}

    def atoms_description(self):
        return self.source.atoms_description()

    def reuse_open_files(self, other):
        self.source.reuse_open_files(other.source)

    def input_files(self):
        return self.source.input_files()


class TiledSource(AbstractEnsembleSource):
    """Periodic images of another source's conformations: each conformation tiled
    `copies = (nx, ny, nz)` times along box vectors (A), as a crowded environment or a
    huge atom set for benchmarks. Atoms are tiled in blocks (all atoms of image 0, then
    image 1, ...).

    **Arguments:**

    - `source`: the unit (e.g. one solvated simulation box).
    - `copies`: images along each box vector.
    - `box_vectors`: 3x3 rows a, b, c in A (an orthorhombic box is a diagonal).
    """

    def __init__(self, source: AbstractEnsembleSource, copies, box_vectors):
        self.source = source
        self.copies = tuple(int(c) for c in copies)
        self.box_vectors = np.asarray(box_vectors, dtype=np.float64).reshape(3, 3)
        if len(self.copies) != 3 or min(self.copies) < 1:
            raise EnsembleSourceError(f"TiledSource: copies must be three integers >= 1; got {copies}")

    @property
    def atomic_numbers(self) -> np.ndarray:
        # Derived, not stored: the source pickled into the task graph stays small.
        return np.tile(self.source.atomic_numbers, int(np.prod(self.copies)))

    @property
    def n_atoms(self) -> int:
        return self.source.n_atoms * int(np.prod(self.copies))

    def _shifts(self) -> np.ndarray:
        grid = np.stack(np.meshgrid(*[np.arange(c) for c in self.copies], indexing="ij"), -1)
        return (grid.reshape(-1, 3) @ self.box_vectors).astype(np.float32)

    def __len__(self):
        return len(self.source)

    def check(self) -> None:
        """The unit's check: images are the unit's atoms plus finite shifts (no tiled
        read of millions of atoms on the client)."""
        self.source.check()

    def read(self, start, stop):
        self._check_range(start, stop)
        unit = self.source.read(start, stop)
        shifts = self._shifts()
        out = np.empty((stop - start, len(shifts), unit.shape[1], 3), np.result_type(unit, shifts))
        # One coordinate at a time: the same float32 sums as broadcasting (n, 1, atoms, 3)
        # against (1, images, 1, 3), whose innermost loop would run 3 elements long.
        for axis in range(3):
            np.add(unit[:, None, :, axis], shifts[None, :, None, axis], out=out[..., axis])
        return out.reshape(stop - start, -1, 3)

    def labels(self):
        return self.source.labels()

    def description(self):
        return {"kind": "tiled", "copies": list(self.copies),
                "box_vectors": self.box_vectors.tolist(), "source": self.source.description()}

    def atoms_description(self):
        return {"kind": "tiled", "copies": list(self.copies),
                "source": self.source.atoms_description()}

    def reuse_open_files(self, other):
        self.source.reuse_open_files(other.source)

    def input_files(self):
        return self.source.input_files()
