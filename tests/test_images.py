"""Particle images (issue 16): projection, CTF, noise, labels, RELION export, resume."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import DATA, ROOT, SHARED, relative_l2
from scipy import constants
from scipy.spatial.transform import Rotation
from scipy.special import erf

import cryoensemble
from cryoensemble.constants import PengScatteringFactorParameters
from cryoensemble.coordinates import make_frequency_grid
from cryoensemble.io import read_atoms_from_pdb
from cryoensemble.ndimage import FourierGaussian
from cryoensemble.particles import CTFDistribution, ParticleParameterError, export_relion
from cryoensemble.simulator import (
    AstigmaticCTF,
    ContrastTransferTheory,
    EulerAnglePose,
    GaussianMixtureImageModel,
    GaussianMixtureRenderFn,
    GaussianMixtureVolume,
    QuaternionPose,
)
from cryoensemble.sources import MultiModelSource, StructureFilesSource


def _chignolin(dtype=np.float64):
    positions, numbers = read_atoms_from_pdb(DATA / "1uao.pdb")
    positions = np.asarray(positions, np.float64)
    positions = positions - positions.mean(axis=0)
    volume = GaussianMixtureVolume.from_tabulated_parameters(
        jnp.asarray(positions, dtype), PengScatteringFactorParameters(numbers))
    return volume


def _direct_projection(positions, amplitudes, variances, shape, pixel_size):
    """float64 numpy: every gaussian of every atom on every pixel, pixel averages."""
    ny, nx = shape
    out = np.zeros(shape)
    axes = [(np.arange(n) - n // 2) * pixel_size for n in (ny, nx)]
    for p, a_row, v_row in zip(positions, amplitudes, variances):
        for a, v in zip(a_row, v_row):
            s = np.sqrt(2 * v)
            py, px = ((erf((axis - c + pixel_size / 2) / s) - erf((axis - c - pixel_size / 2) / s))
                      / (2 * pixel_size) for axis, c in zip(axes, (p[1], p[0])))
            out += a * np.outer(py, px)
    return out


def test_projection_equals_z_sum_of_exact_voxel_volume(x64):
    volume = _chignolin()
    shape, d = (48, 40, 44), 0.8
    potential = GaussianMixtureRenderFn(shape, d)(volume)  # exact voxel averages, A^-2
    z_sum = np.asarray(potential).sum(axis=0) * d  # A^-1
    model = GaussianMixtureImageModel(volume.amplitudes, volume.variances, shape[1:], d,
                                      truncation=1e-12)
    image = jax.jit(lambda p: model.project(p, jnp.eye(3), jnp.zeros(2)))(volume.positions)
    assert relative_l2(image, z_sum) < 1e-10
    # The projection integrates to the total amplitude.
    assert abs(float(image.sum()) * d**2 / float(volume.amplitudes.sum()) - 1) < 1e-9


def test_projection_at_random_poses_equals_float64_direct_sum():
    volume = _chignolin(np.float32)
    shape, d = (36, 40), 1.1
    model = GaussianMixtureImageModel(volume.amplitudes, volume.variances, shape, d)
    rng = np.random.default_rng(3)
    positions = np.asarray(volume.positions, np.float64)
    project = jax.jit(lambda p, r, o: model.project(p, r, o))
    for q in rng.standard_normal((3, 4)):
        q = q / np.linalg.norm(q)
        offset = rng.normal(0, 3.0, 2)
        rotation = Rotation.from_quat(np.r_[q[1:], q[0]]).as_matrix()  # scipy: x, y, z, w
        posed = positions @ rotation.T + np.r_[offset, 0.0]
        reference = _direct_projection(posed, np.asarray(volume.amplitudes, np.float64),
                                       np.asarray(volume.variances, np.float64), shape, d)
        image = project(volume.positions, QuaternionPose(wxyz=q).rotation_matrix
                                       .astype(jnp.float32), jnp.asarray(offset, jnp.float32))
        assert relative_l2(image, reference) < 2e-6


def _textbook_ctf(kx, ky, voltage_kv, du, dv, angle_deg, cs_mm, ac, phase_deg):
    """CTF = -(sqrt(1 - ac^2) sin(chi) + ac cos(chi)), chi = pi lambda dz k^2 -
    pi/2 Cs lambda^3 k^4 + phase, dz from defocus U, V and the angle of U from the x
    axis (CTFFIND4, Rohou & Grigorieff 2015; RELION), all float64."""
    e = voltage_kv * 1e3 * constants.e
    m, c, h = constants.m_e, constants.c, constants.h
    wavelength = h / np.sqrt(2 * m * e * (1 + e / (2 * m * c**2))) * 1e10  # A
    k2 = kx**2 + ky**2
    azimuth = np.arctan2(ky, kx)
    dz = 0.5 * (du + dv + (du - dv) * np.cos(2 * (azimuth - np.deg2rad(angle_deg))))
    chi = (np.pi * wavelength * dz * k2 - 0.5 * np.pi * cs_mm * 1e7 * wavelength**3 * k2**2
           + np.deg2rad(phase_deg))
    return -(np.sqrt(1 - ac**2) * np.sin(chi) + ac * np.cos(chi))


@pytest.mark.parametrize("voltage, du, dv, angle, cs, ac, phase", [
    (300.0, 15000.0, 14200.0, 33.0, 2.7, 0.1, 0.0),
    (200.0, 8000.0, 8600.0, 121.0, 1.4, 0.07, 60.0),
])
def test_ctf_equals_textbook_formula(x64, voltage, du, dv, angle, cs, ac, phase):
    shape, d = (64, 72), 1.3
    grid = make_frequency_grid(shape, d, outputs_rfftfreqs=True)
    # RELION's defocus angle (from x) is cryojax's -angle - 90 (from y).
    theory = ContrastTransferTheory(AstigmaticCTF((du + dv) / 2, du - dv, -angle - 90.0, cs),
                                    amplitude_contrast_ratio=ac, phase_shift=phase)
    ours = np.asarray(theory(grid, voltage))
    g = np.asarray(grid)
    reference = _textbook_ctf(g[..., 0], g[..., 1], voltage, du, dv, angle, cs, ac, phase)
    assert np.max(np.abs(ours - reference)) < 1e-9
    # The B envelope multiplies in exp(-B k^2 / 4).
    b = 45.0
    enveloped = ContrastTransferTheory(theory.ctf, FourierGaussian(b_factor=b), ac, phase)
    k2 = g[..., 0] ** 2 + g[..., 1] ** 2
    assert np.max(np.abs(np.asarray(enveloped(grid, voltage)) - reference * np.exp(-b * k2 / 4))) < 1e-9


def test_ctf_equals_cryojax(x64):
    cryojax_simulator = pytest.importorskip("cryojax.simulator")
    from cryojax.constants import wavelength_from_kilovolts

    from cryoensemble.simulator import AbstractCTF

    grid = make_frequency_grid((50, 64), 1.2, outputs_rfftfreqs=True)
    parameters = dict(defocus_in_angstroms=12000.0, astigmatism_in_angstroms=-700.0,
                      astigmatism_angle=-20.0, spherical_aberration_in_mm=2.1)
    wavelength = float(wavelength_from_kilovolts(300.0))
    theirs = cryojax_simulator.AstigmaticCTF(**parameters)(
        jnp.asarray(grid), wavelength, amplitude_contrast_ratio=0.08, phase_shift=25.0)
    ours = AstigmaticCTF(**parameters)(grid, wavelength, amplitude_contrast_ratio=0.08,
                                       phase_shift=25.0)
    assert isinstance(AstigmaticCTF(), AbstractCTF)
    assert np.max(np.abs(np.asarray(ours) - np.asarray(theirs))) < 1e-10


@pytest.fixture(scope="module")
def nmr_source():
    return MultiModelSource(DATA / "1uao_assembly.pdb")


def _simulate(source, **kwargs):
    options = dict(n_images=12, box=32, pixel_size=1.2, seed=7, images_per_chunk=5,
                   ctf=CTFDistribution(astigmatism_in_angstroms=(0, 600), b_factor=(0, 50)),
                   shift_sigma=1.5)
    options.update(kwargs)
    return cryoensemble.simulate_images(source, **options)


def test_noise_matches_requested_snr_and_regenerates_from_labels(nmr_source):
    snr = 0.5
    noisy = _simulate(nmr_source, snr=snr).compute()
    clean = _simulate(nmr_source, snr=None).compute()
    noise = noisy.images.values.astype(np.float64) - clean.images.values
    sigma = noisy.noise_sigma.values
    # The stated sigma is the SNR's: var(noiseless) / sigma^2 = snr, image by image.
    np.testing.assert_allclose(clean.images.values.std(axis=(1, 2)) / sigma, np.sqrt(snr), rtol=1e-5)
    # The noise has that standard deviation (1024 pixels per image: ~2% sampling error).
    np.testing.assert_allclose(noise.std(axis=(1, 2)) / sigma, 1.0, atol=0.1)
    assert abs(np.mean(noise.var(axis=(1, 2)) / sigma**2) - 1) < 0.05
    # Any image is its noiseless image plus jax.random.normal(key(noise_seed)) * sigma.
    i = 9
    regenerated = clean.images.values[i] + sigma[i] * np.asarray(
        jax.random.normal(jax.random.key(int(noisy.noise_seed[i])), (32, 32), jnp.float32))
    np.testing.assert_allclose(noisy.images.values[i], regenerated, atol=1e-6 * sigma[i] * 10)


def test_conformations_follow_weights(nmr_source):
    weights = np.zeros(len(nmr_source))
    weights[[2, 7]] = [1.0, 3.0]
    labels = _simulate(nmr_source, n_images=2000, weights=weights, snr=None)
    drawn = labels.conformation.values
    assert set(np.unique(drawn)) == {2, 7}
    assert abs(np.mean(drawn == 7) - 0.75) < 0.04
    np.testing.assert_array_equal(labels.source_model.values, nmr_source.labels()["model"][drawn])


def test_store_labels_read_back_through_starfile(tmp_path, nmr_source):
    import mrcfile
    import starfile
    from distributed import Client

    with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0") as client:
        stored = _simulate(nmr_source, store=tmp_path / "p.zarr", client=client)
    lazy = _simulate(nmr_source)
    np.testing.assert_array_equal(stored.images.values, lazy.images.values)
    star = export_relion(str(tmp_path / "p.zarr"), str(tmp_path / "relion"), images_per_stack=8)
    tables = starfile.read(star)
    optics, particles = tables["optics"], tables["particles"]
    assert float(optics["rlnImagePixelSize"][0]) == pytest.approx(1.2)
    assert int(optics["rlnImageSize"][0]) == 32
    assert float(optics["rlnVoltage"][0]) == pytest.approx(300.0)
    np.testing.assert_allclose(particles["rlnDefocusU"], stored.defocus_u, atol=1e-6)
    np.testing.assert_allclose(particles["rlnOriginXAngst"], -stored.shift_x, atol=1e-6)
    np.testing.assert_array_equal(particles["rlnClassNumber"], stored.conformation + 1)
    # RELION's angles of each particle give back its rotation (cryojax: negate them).
    for row, q in zip(particles.itertuples(), stored.quaternion.values):
        euler = EulerAnglePose(phi_angle=-row.rlnAngleRot, theta_angle=-row.rlnAngleTilt,
                               psi_angle=-row.rlnAnglePsi).rotation_matrix
        np.testing.assert_allclose(euler, QuaternionPose(wxyz=q).rotation_matrix, atol=1e-5)
    # Image 10 is the third of the second stack, with RELION's inverted contrast.
    assert particles["rlnImageName"][9] == "000002@particles_00001.mrcs"
    with mrcfile.open(tmp_path / "relion" / "particles_00001.mrcs") as mrc:
        assert mrc.data.shape == (4, 32, 32)
        np.testing.assert_array_equal(mrc.data[1], -stored.images.values[9])
        assert float(mrc.voxel_size.x) == pytest.approx(1.2)


def test_resume_renders_only_missing_chunks(tmp_path, nmr_source):
    from distributed import Client

    path = tmp_path / "p.zarr"
    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0") as client:
        first = _simulate(nmr_source, store=path, client=client).images.values
        chunk_files = sorted((path / "images" / "c").rglob("*"))
        chunk_files = [f for f in chunk_files if f.is_file()]
        assert len(chunk_files) == 3
        # An interrupted run: chunk 1's data and marker are missing.
        os.remove(path / "images" / "c" / "1" / "0" / "0")
        os.remove(path / "rendered" / "c" / "1")
        kept = {f: f.stat().st_mtime_ns for f in chunk_files if "/1/" not in str(f)}
        again = _simulate(nmr_source, store=path, client=client)
        assert bool(again.rendered.all())
        np.testing.assert_array_equal(again.images.values, first)
        assert {f: f.stat().st_mtime_ns for f in kept} == kept  # untouched
        with pytest.raises(ValueError, match="seed: 7 -> 8"):
            _simulate(nmr_source, store=path, client=client, seed=8)


def test_bad_inputs_fail_before_work(nmr_source):
    with pytest.raises(ParticleParameterError, match="n_images"):
        _simulate(nmr_source, n_images=0)
    with pytest.raises(ParticleParameterError, match="pixel_size"):
        _simulate(nmr_source, pixel_size=-1.0)
    with pytest.raises(ParticleParameterError, match="poses"):
        _simulate(nmr_source, poses=np.ones((3, 4)))
    with pytest.raises(ParticleParameterError, match="amplitude_contrast_ratio"):
        CTFDistribution(amplitude_contrast_ratio=1.5)
    with pytest.raises(ParticleParameterError, match="weights"):
        _simulate(nmr_source, weights=[1.0, 2.0])
    with pytest.raises(ParticleParameterError, match="source"):
        _simulate(StructureFilesSource, n_images=2)


def test_notebook_draws_particles_and_projections(tmp_path, monkeypatch):
    """The example notebook's code, run as CI runs it (no kernel), makes its PNG."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    notebook = json.loads((ROOT / "notebooks" / "particles.ipynb").read_text())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CRYOENSEMBLE_SHARED", str(SHARED))
    namespace = {}
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            exec("".join(cell["source"]), namespace)
    particles, projections = namespace["particles"], namespace["projections"]
    assert particles.images.shape == projections.images.shape == (16, 64, 64)
    # Same seed: the same frames and poses, with and without CTF and noise.
    np.testing.assert_array_equal(particles.quaternion, projections.quaternion)
    assert (tmp_path / "particles.png").stat().st_size > 10_000


def test_stored_volumes_image_like_their_atoms(tmp_path, nmr_source):
    """A potential store's volumes by Fourier slice (padded, sinc-corrected linear or
    spline) against the exact projections of the same atoms, poses and shifts. Atoms
    blurred by B = 40 A^2: at 1 A voxels sharper atoms differ by the rotated voxel
    box-blur (10-20%), which is the voxel volume's, not the slice's, error."""
    from distributed import Client

    store = tmp_path / "potential.zarr"
    options = dict(n_images=6, box=40, pixel_size=1.0, seed=2, images_per_chunk=6, ctf=None,
                   snr=None, shift_sigma=1.0)
    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0") as client:
        cryoensemble.render_ensemble(nmr_source, shape=40, voxel_size=1.0, store=str(store),
                                     client=client, extra_b_factor=40.0)
    atoms = cryoensemble.simulate_images(nmr_source, extra_b_factor=40.0, **options).compute()
    for projection, tolerance in (("fourier-linear", 0.03), ("fourier-spline", 0.015)):
        slices = cryoensemble.simulate_images(str(store), projection=projection, **options).compute()
        np.testing.assert_array_equal(slices.source_model, atoms.source_model)
        errors = [relative_l2(s, a) for s, a in zip(slices.images.values, atoms.images.values)]
        assert max(errors) < tolerance, (projection, errors)
    with pytest.raises(ParticleParameterError, match="voxels"):
        cryoensemble.simulate_images(str(store), **dict(options, pixel_size=1.2))


def test_interrupted_store_creation_is_redone(tmp_path, nmr_source):
    """A store whose creation stopped before its format mark is made again by a rerun;
    a folder that is not a particle store is refused."""
    import zarr
    from distributed import Client

    path = tmp_path / "p.zarr"
    zarr.open_group(path, mode="w", zarr_format=3).attrs["parameters"] = "{}"
    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0") as client:
        made = _simulate(nmr_source, store=path, client=client, n_images=5)
        assert bool(made.rendered.all()) and made.sizes["particle"] == 5
        other = tmp_path / "other"
        other.mkdir()
        (other / "keep.txt").write_text("x")
        with pytest.raises(ValueError, match="not a cryoensemble particle store"):
            _simulate(nmr_source, store=other, client=client, n_images=5, overwrite=True)
        assert (other / "keep.txt").exists()
