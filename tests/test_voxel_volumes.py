"""Voxel volumes and their projections, against sums of the voxel grid and exact
projections of the atoms that made it; splines, spectra and frequency grids against numpy
and scipy."""

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.interpolate import CubicSpline

from conftest import GOLDEN, relative_l2
from cryoensemble.constants import PengScatteringFactorParameters
from cryoensemble.coordinates import make_coordinate_grid, make_frequency_grid, make_frequency_slice
from cryoensemble.ndimage import (
    SincCorrectionMask,
    compute_spline_coefficients,
    convert_fftn_to_rfftn,
    convert_rfftn_to_fftn,
    evaluate_spline,
)
from cryoensemble.simulator import (
    AbstractVoxelVolume,
    BasicImageConfig,
    EulerAnglePose,
    FourierSliceExtraction,
    FourierVoxelGridVolume,
    FourierVoxelSplineVolume,
    GaussianMixtureProjection,
    GaussianMixtureRenderFn,
    GaussianMixtureVolume,
    QuaternionPose,
    RealVoxelGridVolume,
    RealVoxelProjection,
)


def project(integrator, volume, shape, pixel_size):
    """The real-space projection, as a cryojax user asks for it."""
    config = BasicImageConfig(shape, pixel_size, 300.0)
    return integrator.integrate(volume, config, outputs_real_space=True)


@pytest.fixture(scope="module")
def adk_case():
    """AdK at 1.5 A in a 64^3 box, blurred (B = 100 A^2) so the grid samples it well:
    the atoms, their exact voxel averages, and the projector of the atoms."""
    data = np.load(GOLDEN["cubic96"])
    atoms = GaussianMixtureVolume.from_tabulated_parameters(
        data["positions_xyz_angstrom"], PengScatteringFactorParameters(data["atomic_numbers"]), 100.0
    )
    dim, voxel_size = 64, 1.5
    voxels = GaussianMixtureRenderFn((dim,) * 3, voxel_size)(atoms)
    return atoms, voxels, dim, voxel_size


# --- identity pose: the central slice is the sum along z ------------------------------


@pytest.mark.parametrize("volume_cls", [FourierVoxelGridVolume, FourierVoxelSplineVolume])
@pytest.mark.parametrize("shape", [(24, 24, 24), (23, 23, 23)])
def test_identity_projection_is_the_sum_along_z(volume_cls, shape):
    grid = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    volume = volume_cls.from_real_voxel_grid(grid)
    image = project(FourierSliceExtraction(), volume, shape[1:], 1.0)
    expected = grid.astype(np.float64).sum(axis=0)
    tolerance = 1e-6 if volume_cls is FourierVoxelGridVolume else 3e-6  # spline: solves
    assert relative_l2(image, expected) <= tolerance
    # The voxel size turns sums into line integrals (A^-1 from A^-2).
    scaled = project(FourierSliceExtraction(), volume, shape[1:], 0.7)
    assert relative_l2(scaled, 0.7 * expected) <= tolerance


def test_identity_projection_float64_with_padding(x64):
    grid = np.random.default_rng(1).normal(size=(20, 20, 20))
    volume = FourierVoxelGridVolume.from_real_voxel_grid(grid, pad_scale=2.0)
    assert volume.shape == (40, 40, 40)
    image = project(FourierSliceExtraction(), volume, (20, 20), 1.0)
    assert relative_l2(image, grid.sum(axis=0)) <= 1e-12
    rfft = FourierSliceExtraction().integrate(volume, BasicImageConfig((20, 20), 1.0, 300.0))
    # The spectrum's phases are about the origin pixel n // 2 (cryojax's rfftn).
    np.testing.assert_allclose(rfft, np.fft.rfftn(np.fft.ifftshift(grid.sum(axis=0))), atol=1e-9)


def test_voxel_sum_equals_exact_atom_projection(adk_case):
    """Independent check of the reference projector: 3D voxel averages summed along z are
    the pixel averages of the line integrals."""
    atoms, voxels, dim, voxel_size = adk_case
    projection = project(GaussianMixtureProjection(), atoms, (dim, dim), voxel_size)
    assert relative_l2(np.asarray(voxels).sum(axis=0) * voxel_size, projection) <= 1e-5


# --- random poses: the errors of each refinement -------------------------------------


def random_poses(n, seed):
    rng = np.random.default_rng(seed)
    quaternions = rng.normal(size=(n, 4))
    return [QuaternionPose(wxyz=q) for q in quaternions]


def test_fourier_slice_approaches_atom_projection(adk_case):
    atoms, voxels, dim, voxel_size = adk_case
    poses = random_poses(3, seed=4)
    references = [
        project(GaussianMixtureProjection(), atoms.rotate_to_pose(pose), (dim, dim), voxel_size)
        for pose in poses
    ]
    extract = lambda volume: project(FourierSliceExtraction(), volume, (dim, dim), voxel_size)  # noqa: E731
    variants = {
        "linear": (FourierVoxelGridVolume, {}),
        "linear + sinc": (FourierVoxelGridVolume, {"sinc_correction": True}),
        "linear, pad 2": (FourierVoxelGridVolume, {"pad_scale": 2.0}),
        "linear + sinc, pad 2": (FourierVoxelGridVolume, {"pad_scale": 2.0, "sinc_correction": True}),
        "spline": (FourierVoxelSplineVolume, {}),
        "spline, pad 2": (FourierVoxelSplineVolume, {"pad_scale": 2.0}),
    }
    error = {}
    for name, (volume_cls, options) in variants.items():
        volume = volume_cls.from_real_voxel_grid(voxels, **options)
        errors = [relative_l2(extract(volume.rotate_to_pose(p)), r) for p, r in zip(poses, references)]
        error[name] = float(np.mean(errors))
    print("\nFourier slice vs exact atom projection (AdK, 64^3, 1.5 A, B=100; mean of 3 poses)")
    for name, value in error.items():
        print(f"  {name:22s} {value:.4f}")
    assert error["linear"] < 0.15
    assert error["linear + sinc"] < 0.85 * error["linear"]
    assert error["linear, pad 2"] < 0.5 * error["linear"]
    assert error["linear + sinc, pad 2"] < 0.5 * error["linear, pad 2"]
    assert error["linear + sinc, pad 2"] < 0.5 * error["linear + sinc"]
    assert error["spline"] < 0.5 * error["linear + sinc"]
    assert error["spline, pad 2"] < error["spline"]
    assert error["spline, pad 2"] < 0.005
    # A rotation the wrong way round would not come close.
    wrong = FourierVoxelSplineVolume.from_real_voxel_grid(voxels).rotate_to_pose(poses[0], inverse=True)
    assert relative_l2(extract(wrong), references[0]) > 0.1


def test_rotation_round_trip_and_representation():
    grid = np.random.default_rng(2).normal(size=(12, 12, 12))
    pose = EulerAnglePose(phi_angle=30.0, theta_angle=50.0, psi_angle=-20.0)
    for volume in (
        FourierVoxelGridVolume.from_real_voxel_grid(grid),
        FourierVoxelSplineVolume.from_real_voxel_grid(grid),
        RealVoxelGridVolume.from_real_voxel_grid(grid),
    ):
        assert isinstance(volume, AbstractVoxelVolume)
        assert volume.to_representation() is volume
        assert volume.shape == (12, 12, 12)
        back = volume.rotate_to_pose(pose).rotate_to_pose(pose, inverse=True)
        for leaf, original in (
            (getattr(back, name), getattr(volume, name))
            for name in ("frequency_slice_in_pixels", "coordinate_grid_in_pixels")
            if hasattr(volume, name)
        ):
            np.testing.assert_allclose(leaf, original, atol=1e-5)
    spline = FourierVoxelSplineVolume.from_real_voxel_grid(grid, pad_scale=1.5)
    assert spline.spline_coefficients.shape == (20, 20, 20) and spline.shape == (18, 18, 18)


# --- real-space voxels ----------------------------------------------------------------


def test_real_voxel_grid_rotated_90_degrees_is_the_permuted_array():
    grid = np.random.default_rng(3).normal(size=(9, 11, 13)).astype(np.float32)
    volume = RealVoxelGridVolume.from_real_voxel_grid(grid)
    np.testing.assert_array_equal(volume.sample_voxel_grid(), grid)
    cube = np.random.default_rng(4).normal(size=(11, 11, 11)).astype(np.float32)
    cube_volume = RealVoxelGridVolume.from_real_voxel_grid(cube)
    # +90 degrees about z sends (x, y) to (-y, x): new[z, j, i] = old[z, n-1-i, j].
    about_z = cube_volume.rotate_to_pose(EulerAnglePose(phi_angle=90.0)).sample_voxel_grid()
    np.testing.assert_allclose(about_z, np.transpose(cube[:, ::-1, :], (0, 2, 1)), atol=1e-5)
    # +90 degrees about y sends (z, x) to (-x, z): new[k, y, i] = old[i, y, n-1-k].
    about_y = cube_volume.rotate_to_pose(EulerAnglePose(theta_angle=90.0)).sample_voxel_grid()
    np.testing.assert_allclose(about_y, np.transpose(cube[:, :, ::-1], (2, 1, 0)), atol=1e-5)
    # The same turn as atoms take it: the real-space route agrees with the atoms' route.
    projection = project(
        RealVoxelProjection(), cube_volume.rotate_to_pose(EulerAnglePose(phi_angle=90.0)), (11, 11), 1.0
    )
    np.testing.assert_allclose(projection, about_z.sum(axis=0), atol=1e-4)


def test_real_voxel_crop_and_coordinates():
    grid = np.arange(10 * 12 * 14, dtype=np.float32).reshape(10, 12, 14)
    volume = RealVoxelGridVolume.from_real_voxel_grid(grid, crop_scale=2.0)
    assert volume.shape == (5, 6, 7)
    # The origin voxel stays the origin: grid[5, 6, 7] is at the cropped [2, 3, 3].
    assert float(volume.real_voxel_grid[2, 3, 3]) == grid[5, 6, 7]
    np.testing.assert_array_equal(volume.coordinate_grid_in_pixels, make_coordinate_grid((5, 6, 7)))
    with pytest.raises(ValueError, match="crop_scale"):
        RealVoxelGridVolume.from_real_voxel_grid(grid, crop_scale=0.5)
    with pytest.raises(ValueError, match="pad_scale"):
        FourierVoxelGridVolume.from_real_voxel_grid(np.zeros((8, 8, 8)), pad_scale=0.5)
    with pytest.raises(ValueError, match="cubic"):
        FourierVoxelGridVolume.from_real_voxel_grid(np.zeros((8, 8, 6)))
    with pytest.raises(TypeError, match="FourierVoxelGridVolume"):
        project(FourierSliceExtraction(), volume, (6, 7), 1.0)


# --- building blocks ------------------------------------------------------------------


def test_spline_coefficients_are_the_natural_cubic_spline():
    rng = np.random.default_rng(5)
    samples = rng.normal(size=17)
    t = np.linspace(-1.0, 17.0, 301)  # outside the samples too
    coefficients = compute_spline_coefficients(jnp.asarray(samples))
    assert coefficients.shape == (19,)
    expected = CubicSpline(np.arange(17), samples, bc_type="natural")(t)
    expected[(t < -0.5) | (t >= 16.5)] = 0.0  # the edge cubics extend half a sample
    np.testing.assert_allclose(evaluate_spline(coefficients, (jnp.asarray(t),)), expected, atol=1e-5)
    # 3D and complex: a product of 1D profiles is the product of their splines.
    profiles = [rng.normal(size=n) + 1j * rng.normal(size=n) for n in (6, 7, 8)]
    cube = np.einsum("i,j,k->ijk", *profiles)
    points = [rng.uniform(0, n - 1, size=50) for n in (6, 7, 8)]
    values = evaluate_spline(compute_spline_coefficients(jnp.asarray(cube)), tuple(map(jnp.asarray, points)))
    splines = [
        CubicSpline(np.arange(len(p)), p.real, bc_type="natural")(x)
        + 1j * CubicSpline(np.arange(len(p)), p.imag, bc_type="natural")(x)
        for p, x in zip(profiles, points)
    ]
    np.testing.assert_allclose(values, splines[0] * splines[1] * splines[2], atol=1e-4)


@pytest.mark.parametrize("shape", [(6, 7, 8), (5, 9), (4, 6, 5)])
def test_full_and_half_spectra(shape):
    array = np.random.default_rng(6).normal(size=shape)
    np.testing.assert_allclose(convert_fftn_to_rfftn(np.fft.fftn(array)), np.fft.rfftn(array), atol=1e-5)
    np.testing.assert_allclose(convert_rfftn_to_fftn(np.fft.rfftn(array), shape), np.fft.fftn(array), atol=1e-4)


def test_sinc_correction_mask():
    mask = SincCorrectionMask((8, 9))
    # Voxel 0 of an even axis is half a box from the origin: sinc(1/2)^-2 = (pi / 2)^2.
    assert float(mask.array[0, 4]) == pytest.approx((np.pi / 2) ** 2, rel=1e-6)
    assert float(mask.array[4, 4]) == pytest.approx(1.0)
    assert float(mask.array[4, 0]) == pytest.approx(np.sinc(-4 / 9) ** -2, rel=1e-6)


def test_frequency_grid_and_slice():
    grid = make_frequency_grid((6, 8, 10), 2.0)
    assert grid.shape == (6, 8, 6, 3)
    np.testing.assert_allclose(grid[..., 0], np.broadcast_to(np.fft.rfftfreq(10, 2.0), (6, 8, 6)))
    np.testing.assert_allclose(grid[..., 2], np.broadcast_to(np.fft.fftfreq(6, 2.0)[:, None, None], (6, 8, 6)))
    full = make_frequency_grid((5, 7), 1.0, outputs_rfftfreqs=False)
    assert full.shape == (5, 7, 2)
    np.testing.assert_allclose(full[..., 1], np.broadcast_to(np.fft.fftfreq(5)[:, None], (5, 7)))
    frequency_slice = make_frequency_slice((8, 8), outputs_rfftfreqs=False)
    assert frequency_slice.shape == (1, 8, 8, 3)
    np.testing.assert_allclose(frequency_slice[0, 4, :, 0], np.fft.fftshift(np.fft.fftfreq(8)))
    np.testing.assert_array_equal(frequency_slice[..., 2], 0.0)
    assert make_frequency_slice((8, 8), outputs_rfftfreqs=True).shape == (1, 8, 5, 3)
