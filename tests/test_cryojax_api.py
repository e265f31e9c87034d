"""The cryojax drop-in: cryojax's documented API, checked against cryojax itself (a peer,
installed from PyPI) where it has the same function, and against physical invariants or
independent references (mdtraj, the float64 projection) otherwise."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import DATA
import cryoensemble.constants as cc
import cryoensemble.io as cio
import cryoensemble.ndimage as im
import cryoensemble.simulator as cxs
from cryoensemble.atom_util import center_atom_positions, split_atoms_by_element


cryojax = pytest.importorskip("cryojax")
import cryojax.constants as jc  # noqa: E402
import cryojax.io as jio  # noqa: E402
import cryojax.simulator as jxs  # noqa: E402
from cryojax.rotations import SO3 as CryojaxSO3  # noqa: E402

PDB = DATA / "1uao.pdb"
ASSEMBLY = DATA / "1uao_assembly.pdb"


# --- io -------------------------------------------------------------------------------


def test_read_atoms_matches_cryojax_with_selection_and_properties():
    kwargs = dict(center=True, selection_string="protein and not element H", loads_properties=True)
    ours = cio.read_atoms_from_pdb(PDB, **kwargs)
    theirs = jio.read_atoms_from_pdb(PDB, **kwargs)
    np.testing.assert_allclose(ours[0], theirs[0], atol=1e-6)
    np.testing.assert_array_equal(ours[1], theirs[1])
    np.testing.assert_allclose(ours[2]["masses"], theirs[2]["masses"], rtol=1e-6)
    np.testing.assert_allclose(ours[2]["b_factors"], theirs[2]["b_factors"])


def test_read_atoms_models_stacked_flat_and_by_number_match_cryojax():
    for kwargs in (dict(stack_models=True), dict(), dict(model_index=3)):
        ours, theirs = cio.read_atoms_from_pdb(ASSEMBLY, **kwargs), jio.read_atoms_from_pdb(ASSEMBLY, **kwargs)
        assert ours[0].shape == theirs[0].shape
        np.testing.assert_allclose(ours[0], theirs[0], atol=1e-6)


def test_center_is_the_centre_of_mass_as_mdtraj_computes_it():
    mdtraj = pytest.importorskip("mdtraj")
    positions, _ = cio.read_atoms_from_pdb(PDB, center=True)
    trajectory = mdtraj.load(str(PDB))
    trajectory.center_coordinates(mass_weighted=True)
    np.testing.assert_allclose(positions, trajectory.xyz[0] * 10.0, atol=1e-4)
    # The mean position is not the centre of mass here (hydrogens are light).
    assert np.linalg.norm(positions.mean(axis=0)) > 0.1


def test_mmdf_dataframe_and_topology_selection():
    mmdf = pytest.importorskip("mmdf")
    frame = mmdf.read(PDB)
    topology = cio.mmdf_to_topology(frame)
    assert topology.n_atoms == len(frame)
    positions, numbers = cio.mmdf_to_atoms(frame, selection_string="element C", center=False)
    np.testing.assert_array_equal(numbers, 6)
    np.testing.assert_allclose(positions, frame[frame.element == "C"][["x", "y", "z"]].to_numpy())


def test_read_array_from_mrc_returns_what_cryojax_returns():
    path = DATA / "3j9g_potential_ps4_4.mrc"
    array = cio.read_array_from_mrc(path)
    np.testing.assert_array_equal(array, jio.read_array_from_mrc(path))
    array, spacing = cio.read_array_from_mrc(path, loads_grid_spacing=True)
    assert spacing == pytest.approx(jio.read_array_from_mrc(path, loads_grid_spacing=True)[1])


def test_split_and_center_atom_utilities():
    positions, numbers = cio.read_atoms_from_pdb(PDB, center=False)
    (by_element, b_by_element), elements = split_atoms_by_element(
        numbers, (positions, np.arange(len(numbers)))
    )
    assert list(elements) == sorted(set(numbers.tolist()))
    assert sum(len(p) for p in by_element) == len(numbers)
    for z, p, index in zip(elements, by_element, b_by_element):
        np.testing.assert_array_equal(numbers[index], z)
        np.testing.assert_array_equal(positions[index], p)
    batched = center_atom_positions(np.stack([positions, positions + 5.0]), atom_axis=1)
    np.testing.assert_allclose(batched.mean(axis=1), 0.0, atol=1e-9)
    np.testing.assert_allclose(batched[0], batched[1], atol=1e-9)


# --- constants ------------------------------------------------------------------------


def test_constants_match_cryojax():
    for kv in (100.0, 200.0, 300.0):
        assert float(cc.wavelength_from_kilovolts(kv)) == pytest.approx(float(jc.wavelength_from_kilovolts(kv)), rel=1e-6)
        assert float(cc.lorentz_factor_from_kilovolts(kv)) == pytest.approx(float(jc.lorentz_factor_from_kilovolts(kv)), rel=1e-6)
    # Relativistic wavelength at 300 kV is 0.01969 A.
    assert float(cc.wavelength_from_kilovolts(300.0)) == pytest.approx(0.019687, abs=1e-6)
    with pytest.raises(ValueError, match="Z=0"):
        cc.check_atomic_numbers_supported(np.array([6, 0]))
    numbers = np.array([1, 6, 7, 8, 16])
    np.testing.assert_allclose(cc.PengScatteringFactorParameters(numbers).a, jc.PengScatteringFactorParameters(numbers).a)


# --- poses ----------------------------------------------------------------------------


@pytest.mark.parametrize("angles", [(10.0, 30.0, -50.0), (-120.0, 140.0, 75.0), (0.0, 0.0, 0.0)])
def test_poses_match_cryojax_and_round_trip(angles):
    ours, theirs = cxs.EulerAnglePose(1.0, -2.0, *angles), jxs.EulerAnglePose(1.0, -2.0, *angles)
    np.testing.assert_allclose(ours.rotation.as_matrix(), theirs.rotation.as_matrix(), atol=1e-6)
    np.testing.assert_allclose(ours.offset_in_angstroms, theirs.offset_in_angstroms)
    # From cryojax's SO3 to each of our parametrizations and back to the same matrix.
    rotation = CryojaxSO3(theirs.rotation.wxyz)
    for cls in (cxs.EulerAnglePose, cxs.QuaternionPose, cxs.AxisAnglePose):
        pose = cls.from_rotation_and_translation(rotation, jnp.asarray([1.0, -2.0]))
        np.testing.assert_allclose(pose.rotation.as_matrix(), rotation.as_matrix(), atol=1e-6)
        inverse = pose.to_inverse_rotation().rotation.as_matrix()
        np.testing.assert_allclose(inverse @ rotation.as_matrix(), np.eye(3), atol=1e-6)


# --- volumes, projections, rendering --------------------------------------------------


def test_load_tabulated_volume_matches_cryojax(x64):
    for output in ("GaussianMixtureVolume", "IndependentAtomVolume"):
        ours = cxs.load_tabulated_volume(PDB, output_type=getattr(cxs, output), include_b_factors=True)
        theirs_type = jxs.GaussianMixtureVolume if output == "GaussianMixtureVolume" else jxs.GaussianFourierVolume
        theirs = jxs.load_tabulated_volume(PDB, output_type=theirs_type, include_b_factors=True)
        for a, b in zip(jax.tree.leaves(ours.positions), jax.tree.leaves(theirs.positions)):
            np.testing.assert_allclose(a, b, atol=1e-6)
    assert cxs.GaussianFourierVolume is cxs.IndependentAtomVolume
    assert ours.get_representation() is ours.to_representation() is ours


def test_gaussian_projection_matches_cryojax_with_padding(x64):
    volume = cxs.load_tabulated_volume(PDB, output_type=cxs.GaussianMixtureVolume)
    theirs_volume = jxs.GaussianMixtureVolume(volume.positions, volume.amplitudes, volume.variances)
    pose = dict(phi_angle=20.0, theta_angle=70.0, psi_angle=-35.0)
    config = cxs.BasicImageConfig((40, 44), 0.9, 300.0, padded_shape=(48, 52))
    theirs_config = jxs.BasicImageConfig((40, 44), 0.9, 300.0, padded_shape=(48, 52))
    rotated = volume.rotate_to_pose(cxs.EulerAnglePose(**pose))
    ours = cxs.GaussianMixtureProjection().integrate(rotated, config, outputs_real_space=True)
    theirs = jxs.GaussianMixtureProjection().integrate(
        theirs_volume.rotate_to_pose(jxs.EulerAnglePose(**pose)), theirs_config, outputs_real_space=True
    )
    np.testing.assert_allclose(ours, theirs, atol=1e-9 * np.abs(theirs).max())
    # The spectrum is cryojax 0.5.6's rfftn: phases about the origin pixel n // 2 (0.6
    # dropped the ifftshift; the images are the same).
    spectrum = cxs.GaussianMixtureProjection().integrate(rotated, config)
    assert spectrum.shape == (48, 52 // 2 + 1)
    np.testing.assert_allclose(spectrum, np.fft.rfftn(np.fft.ifftshift(ours)), atol=1e-9 * np.abs(spectrum).max())


def test_fourier_slice_of_rendered_voxels_is_the_exact_projection(x64):
    # Identity pose: the central slice of the rendered voxels is their sum along z, i.e.
    # the pixel averages of the line integrals (the float64 reference projection).
    volume = cxs.load_tabulated_volume(PDB, output_type=cxs.GaussianMixtureVolume, include_b_factors=True)
    render_fn = cxs.AutoVolumeRenderFn((32, 32, 32), 1.0)
    config = cxs.BasicImageConfig((32, 32), 1.0, 300.0)
    reference = cxs.GaussianMixtureProjection().integrate(volume, config, outputs_real_space=True)
    # The NUFFT of the voxel cloud meets its tolerance (eps = 1e-6 by default).
    cases = ((cxs.FourierVoxelGridVolume, 1e-9), (cxs.FourierVoxelSplineVolume, 1e-9), (cxs.RealVoxelCloudVolume, 1e-5))
    for output_type, tolerance in cases:
        voxels = cxs.render_voxel_volume(volume, render_fn, output_type=output_type)
        assert type(voxels) is output_type
        image = cxs.AutoVolumeProjection().integrate(voxels, config, outputs_real_space=True)
        np.testing.assert_allclose(image, reference, atol=tolerance * np.abs(reference).max())


def test_fft_atom_projection_agrees_with_gaussians(x64):
    pytest.importorskip("jax_finufft")
    positions, numbers = cio.read_atoms_from_pdb(PDB)
    by_element, elements = split_atoms_by_element(numbers, positions)
    atoms = cxs.IndependentAtomVolume.from_tabulated_parameters(
        by_element, cc.PengScatteringFactorParameters(elements), b_factor_by_element=40.0
    )
    gaussians = cxs.GaussianMixtureVolume.from_tabulated_parameters(
        positions, cc.PengScatteringFactorParameters(numbers), extra_b_factors=40.0
    )
    config = cxs.BasicImageConfig((48, 47), 0.8, 300.0)
    reference = cxs.GaussianMixtureProjection().integrate(gaussians, config, outputs_real_space=True)
    for options in (dict(), dict(upsample_factor=3)):
        image = cxs.FFTAtomProjection(eps=1e-10, **options).integrate(atoms, config, outputs_real_space=True)
        assert np.abs(image - reference).max() <= 2e-3 * np.abs(reference).max()


def test_jit_of_the_renderer_with_the_volume_as_argument(x64):
    volume = cxs.load_tabulated_volume(PDB, output_type=cxs.GaussianMixtureVolume)
    render_fn = cxs.GaussianMixtureRenderFn((24, 24, 24), 1.2)
    eager = render_fn(volume)
    compiled = jax.jit(lambda v: render_fn(v))(volume)
    np.testing.assert_allclose(compiled, eager, atol=1e-10 * np.abs(eager).max())
    assert float(compiled.sum()) * 1.2**3 == pytest.approx(float(jnp.sum(volume.amplitudes)), rel=1e-3)


def test_spline_coefficients_use_cryojax_scaling():
    # cryojax's coefficients are those of the basis 6 beta3 (node values 1, 4, 1): a
    # constant grid has coefficients 1 / 6 per axis.
    coefficients = im.compute_spline_coefficients(jnp.ones((7, 8, 9)))
    assert coefficients.shape == (9, 10, 11)
    np.testing.assert_allclose(coefficients, 1.0 / 216.0, rtol=1e-5)


def test_ndimage_conventions_match_cryojax():
    import cryojax.ndimage as jim

    # cryojax 0.5.6's transforms: the real-space origin is index n // 2 (0.6 dropped it).
    array = np.random.default_rng(0).normal(size=(6, 7, 9))
    np.testing.assert_allclose(im.fftn(array), np.fft.fftn(np.fft.ifftshift(array)), atol=1e-4)
    np.testing.assert_allclose(im.rfftn(array), np.fft.rfftn(np.fft.ifftshift(array)), atol=1e-4)
    np.testing.assert_allclose(im.irfftn(im.rfftn(array), s=array.shape), array, atol=1e-5)
    np.testing.assert_allclose(
        im.make_frequency_grid((6, 7), 1.3), jim.make_frequency_grid((6, 7), 1.3), atol=1e-6
    )
    # 0.5.6's default is the full slice (0.6 changed it to the half slice).
    np.testing.assert_allclose(
        im.make_frequency_slice((6, 6)),
        jim.make_frequency_slice((6, 6), outputs_rfftfreqs=False),
        atol=1e-7,
    )
    np.testing.assert_allclose(
        im.crop_to_shape(array, (4, 5, 6)), jim.crop_to_shape(jnp.asarray(array), (4, 5, 6))
    )
