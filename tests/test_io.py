"""Structure and MRC input/output on real files and a corpus of bad ones."""

import gzip
import shutil

import numpy as np
import pytest

from conftest import DATA, TEST_DATA
from cryoensemble.constants import PengScatteringFactorParameters
from cryoensemble.errors import ElementInferenceError, StructureReadError, UnsupportedElementError
from cryoensemble.io import (
    bulk_centre,
    infer_element,
    read_array_from_mrc,
    read_atomic_model,
    read_atoms_from_pdb,
    write_volume_to_mrc,
)


def test_md_written_pdb_infers_elements():
    positions, atomic_numbers, properties = read_atoms_from_pdb(
        DATA / "adk_closed.pdb", loads_properties=True
    )
    assert positions.shape == (3341, 3)
    assert set(atomic_numbers.tolist()) == {1, 6, 7, 8, 16}
    # Centred on the centre of mass by default (cryojax's convention).
    masses = properties["masses"]
    np.testing.assert_allclose(masses @ positions / masses.sum(), 0.0, atol=1e-9)
    assert not np.allclose(positions.mean(axis=0), 0.0, atol=1e-3)


@pytest.mark.parametrize(
    "name, residue, element",
    [("CA", "MET", "C"), ("HG1", "MET", "H"), ("CD", "ARG", "C"), ("1HB", "ALA", "H"),
     ("OW", "SOL", "O"), ("SOD", "SOD", "Na"), ("CLA", "CLA", "Cl"), ("CA", "CAL", "Ca")],
)
def test_infer_element(name, residue, element):
    assert infer_element(name, residue) == element


def test_multi_model_file():
    model = read_atomic_model(DATA / "1uao_assembly.pdb")
    assert model.n_models == 10
    positions, _ = read_atoms_from_pdb(DATA / "1uao_assembly.pdb", stack_models=True)
    assert positions.shape == (10, model.n_atoms, 3)
    flat, _ = read_atoms_from_pdb(DATA / "1uao_assembly.pdb")
    assert flat.shape == (10 * model.n_atoms, 3)
    # model_index is the file's model number (MODEL 4 is the fourth model).
    single, _ = read_atoms_from_pdb(DATA / "1uao_assembly.pdb", model_index=4, center=False)
    np.testing.assert_allclose(single, model.positions[3])


def test_mmcif_and_gzip(tmp_path):
    positions, atomic_numbers = read_atoms_from_pdb(DATA / "8zpm.cif")
    assert positions.shape == (3222, 3)
    assert set(atomic_numbers.tolist()) <= {1, 6, 7, 8, 15, 16}
    for name in ("8zpm.cif", "adk_closed.pdb"):
        packed = tmp_path / (name + ".gz")
        with open(DATA / name, "rb") as src, gzip.open(packed, "wb") as dst:
            shutil.copyfileobj(src, dst)
        np.testing.assert_array_equal(read_atoms_from_pdb(packed)[0], read_atoms_from_pdb(DATA / name)[0])
        np.testing.assert_array_equal(read_atoms_from_pdb(packed)[1], read_atoms_from_pdb(DATA / name)[1])


def test_selection_options():
    everything = read_atomic_model(DATA / "adk_oplsaa.pdb")
    no_water = read_atomic_model(DATA / "adk_oplsaa.pdb", loads_waters=False)
    no_h = read_atomic_model(DATA / "adk_closed.pdb", loads_hydrogens=False)
    # 47,681 records, of which 11,084 are massless TIP4P virtual sites (MW).
    assert everything.n_atoms == 47681 - 11084
    assert set(everything.atomic_numbers.tolist()) == {1, 6, 7, 8, 11, 16}

    assert no_water.n_atoms < 4000
    assert 1 not in no_h.atomic_numbers and no_h.n_atoms < 3341
    _, _, b = read_atoms_from_pdb(DATA / "adk_closed.pdb", loads_b_factors=True)
    assert b.shape == (3341,) and b.max() > 0


def test_altloc_keeps_the_most_occupied_conformation():
    model = read_atomic_model(TEST_DATA / "good" / "altloc.pdb")
    assert model.n_atoms == 4
    np.testing.assert_allclose(model.positions[0, 1], [1.5, 0.5, 0.0])  # altloc B, occ 0.7
    assert read_atomic_model(TEST_DATA / "good" / "altloc.pdb", loads_hetero=False).n_atoms == 4
    assert read_atomic_model(TEST_DATA / "good" / "altloc.pdb", loads_waters=False).n_atoms == 3


@pytest.mark.parametrize(
    "name, kwargs, error, words",
    [
        ("empty.pdb", {}, StructureReadError, "no atom records"),
        ("garbage.pdb", {}, StructureReadError, "no atom records"),
        ("nan_coordinates.pdb", {}, StructureReadError, "NaN"),
        ("only_water.pdb", {"loads_waters": False}, StructureReadError, "no atoms left"),
        ("models_differ.pdb", {}, StructureReadError, "different atoms"),
        ("no_element_unknown_name.pdb", {}, ElementInferenceError, "XQ1"),
        ("does_not_exist.pdb", {}, StructureReadError, "no such file"),
    ],
)
def test_bad_structure_files_raise_named_errors(name, kwargs, error, words):
    path = TEST_DATA / "bad" / name
    with pytest.raises(error) as info:
        read_atoms_from_pdb(path, **kwargs)
    message = str(info.value)
    assert str(path) in message and words in message and "\n" not in message


def test_unsupported_element_is_named():
    _, atomic_numbers = read_atoms_from_pdb(TEST_DATA / "bad" / "unsupported_element.pdb")
    with pytest.raises(UnsupportedElementError, match=r"Es \(Z=99\)"):
        PengScatteringFactorParameters(atomic_numbers)
    with pytest.raises(UnsupportedElementError, match="Z=0"):
        PengScatteringFactorParameters(np.array([6, 0]))


def test_peng_parameters_cover_gemmi_elements():
    import gemmi

    parameters = PengScatteringFactorParameters(np.array([1, 6, 26, 79, 92]))
    for row, symbol in enumerate(["H", "C", "Fe", "Au", "U"]):
        np.testing.assert_allclose(parameters.a[row], gemmi.Element(symbol).c4322.a)
        np.testing.assert_allclose(parameters.b[row], gemmi.Element(symbol).c4322.b)


def test_mrc_round_trip_and_no_silent_overwrite(tmp_path):
    volume = np.random.default_rng(0).random((6, 7, 8)).astype(np.float32)
    path = tmp_path / "v.mrc"
    write_volume_to_mrc(volume, 1.25, path)
    array, voxel_size = read_array_from_mrc(path, loads_grid_spacing=True)
    np.testing.assert_array_equal(array, volume)
    assert voxel_size == pytest.approx(1.25)
    with pytest.raises(FileExistsError, match="v.mrc"):
        write_volume_to_mrc(volume * 2, 1.25, path)
    np.testing.assert_array_equal(read_array_from_mrc(path), volume)


def test_reads_real_mrc():
    array, voxel_size = read_array_from_mrc(DATA / "3j9g_potential_ps4_4.mrc", loads_grid_spacing=True)
    assert array.shape == (64, 64, 64) and voxel_size == pytest.approx(4.4, rel=1e-3)


def _plain_bulk_centre(positions):
    """The definition in plain float64 NumPy (`bulk_centre`'s docstring): the median
    position, every atom within max(4 x the median distance, 10 A) of it, their mean."""
    positions = np.asarray(positions, np.float64)
    median = np.median(positions, axis=0)
    distance = np.linalg.norm(positions - median, axis=1)
    bulk = distance <= max(4.0 * np.median(distance), 10.0)
    centre = positions[bulk].mean(axis=0)
    return centre, int((~bulk).sum()), float(np.linalg.norm(positions - centre, axis=1).max())


@pytest.mark.parametrize("strays", [0, 3, 400])
def test_bulk_centre_is_the_plain_float64_recipe_to_the_last_bit(strays):
    """A third of a million atoms (AdK tiled 5 x 5 x 4, as read, float32) with stray atoms
    from 500 A to 9,000 A away: the centre, stray count and extent equal those of the
    plain float64 recipe bit for bit (a store records the centre, and a resumed store
    must match it)."""
    from cryoensemble.sources import StructureFilesSource, TiledSource

    tiled = TiledSource(StructureFilesSource([DATA / "adk_closed.pdb"]), (5, 5, 4),
                        np.diag([61.0, 67.0, 73.0]))
    positions = tiled.read(0, 1)[0]
    away = np.random.default_rng(strays).uniform(500.0, 9000.0, (strays, 3)).astype(np.float32)
    positions = np.concatenate([positions[: len(positions) // 2], away,
                                positions[len(positions) // 2 :]])
    centre, n_stray, extent = bulk_centre(positions)
    expected = _plain_bulk_centre(positions)
    np.testing.assert_array_equal(centre, expected[0])
    assert (n_stray, extent) == expected[1:] and n_stray >= strays


def test_bulk_centre_of_a_file_with_one_stray_atom():
    positions, _ = read_atoms_from_pdb(TEST_DATA / "bad" / "stray_atom.pdb", center=False)
    centre, n_stray, extent = bulk_centre(positions)
    expected = _plain_bulk_centre(positions)
    np.testing.assert_array_equal(centre, expected[0])
    assert (n_stray, extent) == expected[1:] and n_stray == 1 and extent > 8900.0
