"""GaussianMixtureRenderFn against golden volumes, a float64 direct sum and physics."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import GOLDEN, direct_voxel_average, relative_l2
from cryoensemble.constants import PengScatteringFactorParameters
from cryoensemble.errors import BatchOptionsError
from cryoensemble.simulator import (
    AxisAnglePose,
    EulerAnglePose,
    GaussianMixtureRenderFn,
    GaussianMixtureVolume,
    QuaternionPose,
    SupportPlan,
    atoms_touching_planes,
)


def golden_case(name):
    data = np.load(GOLDEN[name])
    volume = GaussianMixtureVolume.from_tabulated_parameters(
        data["positions_xyz_angstrom"],
        PengScatteringFactorParameters(data["atomic_numbers"]),
        data["extra_b_factors"],
    )
    render = GaussianMixtureRenderFn(
        tuple(int(s) for s in data["shape_zyx"]), float(data["voxel_size_angstrom"])
    )
    return volume, render, data["volume_zyx"]


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_float32(name):
    volume, render, reference = golden_case(name)
    out = render(volume)
    assert out.dtype == jnp.float32
    assert out.shape == reference.shape
    assert relative_l2(out, reference) <= 2e-6


def test_float32_keeps_its_precision_far_from_the_centre():
    """Faces are measured from the centre voxel: atoms 100 voxels out render as
    accurately in float32 as atoms at the centre (adding n // 2 first cost ~1e-5)."""
    data = np.load(GOLDEN["cubic96"])
    keep = slice(0, 60)
    positions = data["positions_xyz_angstrom"][keep]
    positions = positions - positions.mean(axis=0) + np.array([100.0, 0.0, 0.0])
    parameters = PengScatteringFactorParameters(data["atomic_numbers"][keep])
    shape, voxel_size = (24, 24, 256), 1.0
    positions32 = positions.astype(np.float32)
    volume = GaussianMixtureVolume.from_tabulated_parameters(positions32, parameters)
    reference = direct_voxel_average(
        positions32.astype(np.float64), np.asarray(parameters.a, np.float64),
        np.asarray(parameters.b, np.float64) / (8 * np.pi**2), shape, voxel_size,
    )
    out = GaussianMixtureRenderFn(shape, voxel_size)(volume)
    assert out.dtype == jnp.float32
    assert relative_l2(out, reference) <= 1e-6


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_float64(name, x64):
    volume, render, reference = golden_case(name)
    out = render(volume)
    assert out.dtype == jnp.float64
    assert relative_l2(out, reference) <= 1e-9


def small_mixture(seed=0, n=6, g=3, extent=4.0):
    rng = np.random.default_rng(seed)
    positions = rng.uniform(-extent, extent, (n, 3))
    amplitudes = rng.uniform(0.2, 1.5, (n, g))
    variances = rng.uniform(0.05, 1.2, (n, g))
    return positions, amplitudes, variances


def test_matches_float64_direct_sum(x64):
    positions, amplitudes, variances = small_mixture()
    shape, voxel_size = (17, 20, 23), 0.7
    reference = direct_voxel_average(positions, amplitudes, variances, shape, voxel_size)
    volume = GaussianMixtureVolume(positions, amplitudes, variances)
    out = GaussianMixtureRenderFn(shape, voxel_size)(volume)
    assert relative_l2(out, reference) <= 1e-11


@pytest.fixture(params=["rows", "windows", "voxels"])
def scatter(request):
    """Each way of accumulating the windows; the default picks "voxels" on GPUs and
    "rows" elsewhere, so the CPU suite checks the GPU one here."""
    return request.param


def test_every_scatter_matches_the_float64_direct_sum(x64, scatter):
    # Atoms near and beyond the faces: windows are clipped (rows, windows) or dropped
    # voxel by voxel (voxels).
    positions, amplitudes, variances = small_mixture(seed=3, n=12, extent=9.0)
    shape, voxel_size = (17, 20, 23), 0.7
    reference = direct_voxel_average(positions, amplitudes, variances, shape, voxel_size)
    volume = GaussianMixtureVolume(positions, amplitudes, variances)
    render = GaussianMixtureRenderFn(shape, voxel_size, batch_options={"n_batches": 3},
                                     scatter=scatter)
    assert relative_l2(render(volume), reference) <= 1e-11
    slab = render.render_slab(volume, 5, 7)
    assert relative_l2(slab, reference[5:12]) <= 1e-11
    assert float(jnp.max(jnp.abs(slab - reference[5:12]))) <= 1e-11 * float(np.abs(reference).max())


@pytest.mark.parametrize("truncation", [1e-3, 1e-4, 1e-6])
def test_truncation_bound_holds(x64, truncation):
    """The dropped tails stay under the stated relative L2 bound."""
    data = np.load(GOLDEN["cubic96"])
    keep = slice(0, 400)  # a few residues: enough overlap, cheap reference
    positions = data["positions_xyz_angstrom"][keep]
    parameters = PengScatteringFactorParameters(data["atomic_numbers"][keep])
    volume = GaussianMixtureVolume.from_tabulated_parameters(positions, parameters, 15.0)
    shape, voxel_size = (48, 48, 48), 1.0
    exact = GaussianMixtureRenderFn(shape, voxel_size, truncation=1e-14)(volume)
    render = GaussianMixtureRenderFn(shape, voxel_size, truncation=truncation)
    error = relative_l2(render(volume), exact)
    assert 0 < error <= truncation
    # The bound is not vacuous: a smaller support does drop more than it.
    radius = render.support_radius_for(volume)
    narrow = GaussianMixtureRenderFn(shape, voxel_size, support_radius=0.4 * radius)
    assert relative_l2(narrow(volume), exact) > truncation


def test_integrates_to_sum_of_amplitudes():
    volume, render, _ = golden_case("cubic96")
    out = np.asarray(render(volume), np.float64)
    assert out.sum() * 1.0**3 == pytest.approx(float(np.sum(volume.amplitudes)), rel=1e-5)


def test_integer_voxel_translation_shifts_the_array():
    volume, render, _ = golden_case("cubic96")
    shift_zyx = (2, -3, 1)
    pose = EulerAnglePose(
        offset_x_in_angstroms=shift_zyx[2] * 1.0,
        offset_y_in_angstroms=shift_zyx[1] * 1.0,
        offset_z_in_angstroms=shift_zyx[0] * 1.0,
    )
    moved = np.asarray(render(volume.translate_to_pose(pose)))
    expected = np.roll(np.asarray(render(volume)), shift_zyx, axis=(0, 1, 2))
    assert relative_l2(moved, expected) <= 1e-5  # float32 rounding of the moved positions


@pytest.mark.parametrize(
    "pose",
    [
        EulerAnglePose(phi_angle=90.0),
        QuaternionPose(wxyz=(np.cos(np.pi / 4), 0.0, 0.0, np.sin(np.pi / 4))),
        AxisAnglePose(euler_vector=(0.0, 0.0, 90.0)),
    ],
)
def test_90_degree_pose_permutes_axes(pose):
    positions, amplitudes, variances = small_mixture(seed=3, n=8)
    volume = GaussianMixtureVolume(positions, amplitudes, variances)
    render = GaussianMixtureRenderFn((21, 21, 21), 0.8)  # odd: the grid maps onto itself
    original = np.asarray(render(volume))
    rotated = np.asarray(render(volume.rotate_to_pose(pose)))
    # A +90 degree turn about z sends (x, y) to (-y, x): new[z, j, i] = old[z, n-1-i, j].
    expected = np.transpose(original[:, ::-1, :], (0, 2, 1))
    assert relative_l2(rotated, expected) <= 1e-5
    back = np.asarray(render(volume.rotate_to_pose(pose).rotate_to_pose(pose, inverse=True)))
    assert relative_l2(back, original) <= 1e-5


def test_larger_b_factor_lowers_the_peak():
    data = np.load(GOLDEN["cubic96"])
    parameters = PengScatteringFactorParameters(data["atomic_numbers"])
    render = GaussianMixtureRenderFn((96, 96, 96), 1.0)
    peaks = [
        float(
            render(
                GaussianMixtureVolume.from_tabulated_parameters(
                    data["positions_xyz_angstrom"], parameters, b
                )
            ).max()
        )
        for b in (0.0, 30.0, 100.0)
    ]
    assert peaks[0] > peaks[1] > peaks[2] > 0


def test_batch_options_give_the_same_volume():
    volume, _, _ = golden_case("cubic96")
    reference = GaussianMixtureRenderFn((96, 96, 96), 1.0)(volume)
    for options in ({"n_batches": 3}, {"batch_size": 7}, {"batch_size": 20, "n_batches": 5}):
        out = GaussianMixtureRenderFn((96, 96, 96), 1.0, batch_options=options)(volume)
        assert relative_l2(out, reference) <= 1e-6, options


@pytest.mark.parametrize(
    "options",
    [{"n_batches": 0}, {"batch_size": -1}, {"batch_size": 1000}, {"n_batches": 2.5}, {"chunks": 2}],
)
def test_bad_batch_options_raise(options):
    with pytest.raises(BatchOptionsError):
        render = GaussianMixtureRenderFn((96, 96, 96), 1.0, batch_options=options)
        render(GaussianMixtureVolume(np.zeros((1, 3)), 1.0, 1.0))


def test_n_batches_larger_than_atoms_raises():
    render = GaussianMixtureRenderFn((8, 8, 8), 1.0, batch_options={"n_batches": 5})
    with pytest.raises(BatchOptionsError, match="n_batches"):
        render(GaussianMixtureVolume(np.zeros((2, 3)), 1.0, 1.0))


def test_slabs_equal_the_whole_volume_bitwise():
    """Bit for bit on CPU; GPU scatters add in no fixed order, so there to float rounding."""
    volume, render, _ = golden_case("zyx80x96x112_bfactors")
    whole = np.asarray(render(volume))
    assert len(render.plan_for(volume).groups) > 1  # several window sizes in play
    for z0, size in ((0, 13), (13, 40), (53, 27)):
        slab = np.asarray(render.render_slab(volume, z0, size))
        if jax.default_backend() == "cpu":
            np.testing.assert_array_equal(slab, whole[z0 : z0 + size])
        else:
            assert relative_l2(slab, whole[z0 : z0 + size]) <= 1e-6


def test_support_groups_follow_each_atoms_width():
    """Wide atoms (heavy B) get wide windows without widening everyone else's."""
    positions, amplitudes, variances = small_mixture(seed=7, n=30)
    variances[:3] *= 8.0  # three broad atoms
    volume = GaussianMixtureVolume(positions, amplitudes, variances)
    render = GaussianMixtureRenderFn((24, 24, 24), 1.0)
    plan = render.plan_for(volume)
    order, groups = plan.order, plan.groups
    assert len(groups) >= 2 and groups[-1][0] <= 3 < sum(g[0] for g in groups)
    assert set(order[-groups[-1][0]:]) <= {0, 1, 2}
    uniform = GaussianMixtureRenderFn((24, 24, 24), 1.0, support_radius=groups[-1][1])
    assert relative_l2(render(volume), uniform(volume)) <= 1e-6


def test_distinct_rows_match_numpy_unique():
    """The hashed row grouping that sizes a million atoms in a fraction of a second
    gives numpy's record-sorted rows, NaN rows (which the hash check sends to numpy's
    sort) included."""
    from cryoensemble.simulator._volume_rendering._gaussian_kernels import distinct_rows

    rng = np.random.default_rng(3)
    rows = rng.uniform(0.1, 2.0, (7, 10))
    table = rows[rng.integers(0, 7, 5000)]
    for case in (table, np.where(np.arange(5000)[:, None] == 9, np.nan, table)):
        found, inverse = distinct_rows(case)
        expected, _ = np.unique(case, axis=0, return_inverse=True)
        np.testing.assert_array_equal(found[inverse], case)
        assert len(found) == len(expected)
        np.testing.assert_array_equal(found[np.lexsort(found.T[::-1])],
                                      expected[np.lexsort(expected.T[::-1])])


def test_traced_variances_fall_back_to_exact_dense_path():
    """A volume built inside jit from traced variances, with no plan held anywhere."""
    positions, amplitudes, variances = small_mixture(seed=1)
    render = GaussianMixtureRenderFn((16, 16, 16), 1.0)
    eager = render(GaussianMixtureVolume(positions, amplitudes, variances))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        jitted = jax.jit(lambda p, a, v: render(GaussianMixtureVolume(p, a, v)))(
            positions, amplitudes, variances)
    assert any("traced" in str(w.message) for w in caught)
    assert relative_l2(jitted, eager) <= 1e-5


def _compiled_text(render, volume) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the dense fallback warns
        return jax.jit(lambda v: render(v)).lower(volume).as_text()


def test_jit_of_a_volume_built_outside_takes_the_local_path():
    """cryojax users' own code: the renderer holds no plan, the volume is a jit argument.
    The compiled graph is the local one (scatter-adds, no matrix products over the grid),
    exactly the graph of a renderer holding the plan, and the numbers are the eager ones."""
    volume, render, reference = golden_case("zyx80x96x112_bfactors")
    text = _compiled_text(render, volume)
    assert "scatter" in text and "dot_general" not in text
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dense = jax.jit(lambda p, a, v: render(GaussianMixtureVolume(p, a, v))).lower(
            volume.positions, volume.amplitudes, volume.variances).as_text()
    assert "dot_general" in dense and "scatter" not in dense  # the check can fail
    held = render.for_volume(volume)
    assert held.support_plan.groups == render.plan_for(volume).groups
    assert _compiled_text(held, volume) == text
    out = jax.jit(lambda v: render(v))(volume)
    assert relative_l2(out, reference) <= 2e-6
    assert relative_l2(out, render(volume)) <= 1e-6


def test_volumes_of_one_mixture_share_the_compiled_render():
    volume, render, _ = golden_case("cubic96")
    jitted = jax.jit(lambda v: render(v))
    jitted(volume)
    moved = GaussianMixtureVolume(volume.positions + 1.0, volume.amplitudes + 0.0,
                                  volume.variances + 0.0)  # new arrays, same values
    jitted(moved)
    assert jitted._cache_size() == 1


def test_atoms_on_a_window_boundary_are_selected_as_the_kernel_adds_them():
    """Atoms whose window starts a few float32 ulps either side of a plane boundary:
    each one the selection takes adds something to the slab's planes, each one it leaves
    out adds exactly nothing, and the slab from the selected atoms equals the same planes
    of the whole volume bit for bit."""
    shape, voxel_size, radius, (z0, z1) = (24, 24, 24), 0.85, 2.1, (10, 15)
    k = SupportPlan.from_radius(1, radius, voxel_size).k_max
    centre = shape[0] // 2
    # Window start = z0 - k + 1 (first that meets z0) and z1 (first that misses z1).
    boundaries = [(z0 - k + 1 - centre - 0.5) * voxel_size + radius,
                  (z1 - centre - 0.5) * voxel_size + radius]
    z = np.concatenate([
        np.float32(b) + np.arange(-40, 41, dtype=np.float32) * np.spacing(np.float32(b))
        for b in boundaries
    ])
    positions = np.zeros((len(z), 3), np.float32)
    positions[:, 2] = z
    render = GaussianMixtureRenderFn(shape, voxel_size, support_radius=radius)
    plan = render.plan_for(GaussianMixtureVolume(positions, 1.0, 0.4))
    mask = atoms_touching_planes(positions, shape, voxel_size, plan, z0, z1)
    assert 0 < mask.sum() < len(mask)  # the boundaries do split these atoms
    one = jax.jit(jax.vmap(lambda p: render.render_slab(
        GaussianMixtureVolume(p[None], 1.0, 0.4), z0, z1 - z0)))
    slabs = np.asarray(one(jnp.asarray(positions)))
    added = np.abs(slabs).reshape(len(z), -1).max(axis=1) > 0
    np.testing.assert_array_equal(added, mask)
    volume = GaussianMixtureVolume(positions, 1.0, 0.4)
    whole = np.asarray(render(volume))
    selected = GaussianMixtureVolume(positions[mask], 1.0, 0.4)
    slab = np.asarray(render.render_slab(selected, z0, z1 - z0))
    if jax.default_backend() == "cpu":
        np.testing.assert_array_equal(slab, whole[z0:z1])
    else:  # GPU scatter-adds run in no fixed order: equal to float32 rounding
        np.testing.assert_allclose(slab, whole[z0:z1], rtol=0, atol=1e-6 * np.abs(whole).max())


def test_jit_and_vmap_with_support_radius():
    positions, amplitudes, variances = small_mixture(seed=2)
    render = GaussianMixtureRenderFn((16, 16, 16), 1.0, support_radius=6.0)

    @jax.jit
    def one(p):
        return render(GaussianMixtureVolume(p, amplitudes, variances))

    stack = jax.vmap(one)(jnp.stack([positions, positions + 1.0]))
    eager = GaussianMixtureRenderFn((16, 16, 16), 1.0)
    assert relative_l2(stack[0], eager(GaussianMixtureVolume(positions, amplitudes, variances))) <= 1e-5
    assert relative_l2(
        stack[1], eager(GaussianMixtureVolume(positions + 1.0, amplitudes, variances))
    ) <= 1e-5


def test_gradients_match_finite_differences(x64, scatter):
    positions, amplitudes, variances = small_mixture(seed=4, n=3, g=2, extent=2.0)
    shape, voxel_size = (12, 12, 12), 0.9
    weights = np.random.default_rng(5).normal(size=shape)
    render = GaussianMixtureRenderFn(shape, voxel_size, support_radius=8.0, scatter=scatter)

    def loss(p, a, v):
        return jnp.sum(render(GaussianMixtureVolume(p, a, v)) * weights)

    grads = jax.grad(loss, argnums=(0, 1, 2))(positions, amplitudes, variances)
    step = 1e-6
    for which, (argument, grad) in enumerate(zip((positions, amplitudes, variances), grads)):
        for index in [(0, 0), (1, 1), (2, 0)]:
            plus, minus = [a.copy() for a in (argument, argument)]
            plus[index] += step
            minus[index] -= step
            args_plus = [positions, amplitudes, variances]
            args_minus = [positions, amplitudes, variances]
            args_plus[which], args_minus[which] = plus, minus
            numeric = (loss(*args_plus) - loss(*args_minus)) / (2 * step)
            assert float(grad[index]) == pytest.approx(float(numeric), rel=1e-5, abs=1e-8)


def test_fourier_outputs():
    positions, amplitudes, variances = small_mixture(seed=6)
    volume = GaussianMixtureVolume(positions, amplitudes, variances)
    render = GaussianMixtureRenderFn((10, 12, 14), 1.0)
    real = np.asarray(render(volume), np.float64)
    rfft = render(volume, outputs_real_space=False, outputs_rfft=True)
    fft_shifted = render(volume, outputs_real_space=False, fftshifted=True)
    assert rfft.shape == (10, 12, 8)
    # cryojax's convention: phases about the origin voxel n // 2 (ifftshift first).
    centred = np.fft.ifftshift(real)
    np.testing.assert_allclose(rfft, np.fft.rfftn(centred), atol=1e-4 * np.abs(rfft).max())
    np.testing.assert_allclose(
        fft_shifted, np.fft.fftshift(np.fft.fftn(centred)), atol=1e-4 * np.abs(rfft).max()
    )


@pytest.mark.parametrize(
    "amplitudes, variances, n_gaussians",
    [(1.0, 0.5, 1), (jnp.asarray(1.0), jnp.asarray(0.5), 1), (np.ones(4), np.full(4, 0.5), 1),
     (np.ones((4, 3)), np.full((4, 3), 0.5), 3), (np.ones((4, 3)), 0.5, 3)],
)
def test_volume_accepts_the_four_parameter_forms(amplitudes, variances, n_gaussians):
    volume = GaussianMixtureVolume(np.zeros((4, 3)), amplitudes, variances)
    assert volume.amplitudes.shape == volume.variances.shape == (4, n_gaussians)


def test_volume_rejects_bad_shapes():
    with pytest.raises(ValueError, match="positions"):
        GaussianMixtureVolume(np.zeros((4, 2)), 1.0, 1.0)
    with pytest.raises(ValueError, match="amplitudes"):
        GaussianMixtureVolume(np.zeros((4, 3)), np.ones(5), 1.0)
    with pytest.raises(TypeError, match="GaussianMixtureVolume"):
        GaussianMixtureRenderFn((8, 8, 8), 1.0)(np.zeros((4, 3)))
