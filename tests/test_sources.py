"""Ensemble sources: what they read, and the errors that name bad inputs."""

import pickle

import numpy as np
import pytest

from helpers import DATA
from cryoensemble.errors import EnsembleSourceError
from cryoensemble.sources import (
    AbstractEnsembleSource,
    MorphSource,
    ParametrizationSource,
    StructureFilesSource,
    TrajectorySource,
)


def test_sources_refuse_mismatched_atoms(tmp_path):
    with pytest.raises(EnsembleSourceError, match="atoms differ"):
        StructureFilesSource([DATA / "adk_closed.pdb", DATA / "1uao.pdb"]).read(0, 2)
    with pytest.raises(EnsembleSourceError, match="atoms differ"):
        MorphSource(DATA / "adk_closed.pdb", DATA / "8zpm.cif", 3)
    with pytest.raises(EnsembleSourceError, match="no files match"):
        StructureFilesSource([str(tmp_path / "*.pdb")])


def test_tiled_and_cycled_sources():
    from cryoensemble.sources import CycledSource, TiledSource

    unit = StructureFilesSource([DATA / "adk_closed.pdb", DATA / "adk_open.pdb"])
    tiled = TiledSource(unit, (1, 2, 1), np.diag([100.0, 90.0, 80.0]))
    positions = tiled.read(0, 2)
    assert positions.shape == (2, 2 * unit.n_atoms, 3) and tiled.n_atoms == 2 * unit.n_atoms
    np.testing.assert_allclose(positions[:, unit.n_atoms:], unit.read(0, 2) + [0.0, 90.0, 0.0], atol=1e-4)
    cycled = CycledSource(unit, 5)
    np.testing.assert_array_equal(cycled.read(1, 4), unit.read(0, 2)[[1, 0, 1]])
    np.testing.assert_array_equal(cycled.labels()["origin"], [0, 1, 0, 1, 0])
    with pytest.raises(EnsembleSourceError, match="copies"):
        TiledSource(unit, (0, 1, 1), np.eye(3))


def test_only_sources_with_their_own_mixture_declare_one():
    """Capabilities live on the base class: tabulated sources have no mixture."""
    from cryoensemble.simulator import GaussianMixtureVolume, PositionJitteredVolume

    files = StructureFilesSource([DATA / "adk_closed.pdb"])
    assert AbstractEnsembleSource.mixture(files) is None and files.mixture() is None
    mean = GaussianMixtureVolume(np.zeros((5, 3)), 1.0, 0.5)
    sampled = ParametrizationSource(PositionJitteredVolume(mean, 0.3), 2, seed=1)
    amplitudes, variances = sampled.mixture()
    np.testing.assert_array_equal(amplitudes, np.asarray(mean.amplitudes))
    np.testing.assert_array_equal(variances, np.asarray(mean.variances))


def test_a_trajectory_source_travels_as_file_names_and_reads_the_same():
    """Workers receive a pickled source: it reopens the files itself, and reads the
    frames MDAnalysis reads directly."""
    import MDAnalysis

    source = TrajectorySource(DATA / "adk.psf", DATA / "adk_dims.dcd", frames="3:9:2")
    copy = pickle.loads(pickle.dumps(source))
    assert copy.reader._universe is None  # not pickled
    universe = MDAnalysis.Universe(str(DATA / "adk.psf"), str(DATA / "adk_dims.dcd"))
    universe.trajectory[5]
    np.testing.assert_array_equal(copy.read(1, 2)[0], universe.atoms.positions)
    np.testing.assert_array_equal(copy.read(0, 3), source.read(0, 3))
    with pytest.raises(EnsembleSourceError, match="selection"):
        TrajectorySource(DATA / "adk.psf", DATA / "adk_dims.dcd", selection="resname (")


def test_selections_by_guessed_type_or_mass_pick_what_mdanalysis_picks():
    """Trajectories open without MDAnalysis' type and mass guesses (elements come from the
    topology's own columns); a selection that needs them guesses them then, and picks
    the atoms a Universe opened with MDAnalysis' defaults picks, in a worker's copy too."""
    import warnings

    import MDAnalysis

    pdb, xtc = str(DATA / "adk_oplsaa.pdb"), str(DATA / "adk_oplsaa.xtc")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = MDAnalysis.Universe(pdb, xtc)
    everything = TrajectorySource(pdb, xtc, frames="0:1")
    assert "masses" not in dir(everything.reader.universe().atoms)  # nothing guessed
    for selection in ("prop mass > 2 and resname LYS", "type S"):
        source = TrajectorySource(pdb, xtc, frames="0:1", selection=selection)
        expected = reference.select_atoms(selection)
        assert 0 < len(expected) < len(reference.atoms)
        for copy in (source, pickle.loads(pickle.dumps(source))):
            np.testing.assert_array_equal(copy.read(0, 1)[0], expected.positions)
    # A topology with nothing to guess from (a DCD's bare atoms): a bad selection is still
    # the one-line error that names it.
    with pytest.raises(EnsembleSourceError, match="selection 'resname \\('"):
        TrajectorySource(DATA / "adk_dims.dcd", DATA / "adk_dims.dcd", selection="resname (")


def test_a_worker_opens_a_trajectory_once_for_all_its_frame_selections(monkeypatch):
    """A second render of other frames of the same files (a notebook's next frame, the
    warm huge-atom render) reuses the Universe the worker opened, and reads the right
    frames; other atoms (a selection) or changed files open their own."""
    import MDAnalysis

    from cryoensemble.distributed import tasks
    from cryoensemble.io import trajectories
    from cryoensemble.sources import TiledSource

    opened = []
    real_open = trajectories._open_universe
    monkeypatch.setattr(trajectories, "_open_universe",
                        lambda *a: opened.append(a) or real_open(*a))
    monkeypatch.setattr(tasks, "_STATE", tasks.WorkerState())
    box = np.diag([80.0, 80.0, 80.0])

    def sent(frames, selection="all"):  # what the client puts in the task graph
        unit = TrajectorySource(DATA / "adk.psf", DATA / "adk_dims.dcd", frames=frames,
                                selection=selection)
        return pickle.dumps(TiledSource(unit, (1, 1, 2), box))

    graphs = [sent("0:1"), sent("7:9"), sent("7:9", selection="name CA")]
    opened.clear()  # the client's own opens do not count
    first, second, other_atoms = (tasks.kept_source(pickle.loads(g)) for g in graphs)
    first.read(0, 1)
    positions = second.read(0, 2)
    assert len(opened) == 1
    universe = MDAnalysis.Universe(str(DATA / "adk.psf"), str(DATA / "adk_dims.dcd"))
    universe.trajectory[8]
    np.testing.assert_array_equal(positions[1, : universe.atoms.n_atoms], universe.atoms.positions)
    np.testing.assert_allclose(positions[1, universe.atoms.n_atoms:],
                               universe.atoms.positions + [0.0, 0.0, 80.0], atol=1e-4)
    other_atoms.read(0, 1)
    assert len(opened) == 2
