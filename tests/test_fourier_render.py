"""The Fourier route: NUFFTs, FFTAtomRenderFn, IndependentAtomVolume, scattering factors,
AutoVolumeRenderFn. References are float64 numpy sums and the real-space renderer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cryoensemble.ndimage.nufft as nufft
from helpers import GOLDEN, relative_l2
from cryoensemble.constants import LobatoScatteringFactorParameters, PengScatteringFactorParameters
from cryoensemble.errors import UnsupportedElementError
from cryoensemble.ndimage import (
    FourierGaussian,
    FourierSinc,
    LobatoScatteringFactor,
    PengScatteringFactor,
)
from cryoensemble.simulator import (
    AutoVolumeRenderFn,
    EulerAnglePose,
    FFTAtomRenderFn,
    FourierVoxelGridVolume,
    GaussianMixtureRenderFn,
    GaussianMixtureVolume,
    IndependentAtomVolume,
    split_atoms_by_element,
)


# jax-finufft is optional (`cryoensemble[nufft]`) and PyPI's is CPU-only; where it cannot
# run on the default device the JAX engine alone is tested.
HAS_FINUFFT = jax.default_backend() in nufft.jax_finufft_platforms()
needs_finufft = pytest.mark.skipif(
    not HAS_FINUFFT, reason="jax-finufft is not installed for the default device"
)
BACKENDS = [pytest.param("finufft", marks=needs_finufft), "jax"]
BACKEND_NAMES = ["finufft", "jax"] if HAS_FINUFFT else ["jax"]


# --- float64 numpy references -------------------------------------------------------


def direct_type1(shape, strengths, points, iflag=1):
    """sum_j c_j exp(i iflag k.x_j) on centred modes, every term in float64."""
    modes = np.meshgrid(*[np.arange(-(n // 2), (n + 1) // 2) for n in shape], indexing="ij")
    phase = np.einsum("jd,d...->j...", np.asarray(points, np.float64), np.asarray(modes))
    return np.einsum("j,j...->...", np.asarray(strengths, np.complex128), np.exp(1j * iflag * phase))


def direct_fourier_series(positions_by_type, factors, shape, voxel_size, average=True):
    """U_l = 1/V sum_xi S(xi) sum_t f_t(|xi|^2) sum_n exp(2 pi i xi.(r_n - r_l)), the
    band-limited series over the grid's frequencies, as explicit float64 sums.

    `factors` are numpy functions of |xi|^2 (A^-2)."""
    box = np.asarray(shape, np.float64) * voxel_size  # z, y, x
    xi_axes = [np.arange(-(n // 2), (n + 1) // 2) / length for n, length in zip(shape, box)]
    r_axes = [(np.arange(n) - n // 2) * voxel_size for n in shape]
    xz, xy, xx = np.meshgrid(*xi_axes, indexing="ij")
    xi2 = xx**2 + xy**2 + xz**2
    coefficients = np.zeros(shape, np.complex128)
    for positions, factor in zip(positions_by_type, factors):
        sums = np.zeros(shape, np.complex128)
        for x, y, z in np.asarray(positions, np.float64):
            sums += np.exp(2j * np.pi * (xx * x + xy * y + xz * z))
        coefficients += factor(xi2) * sums
    if average:
        coefficients *= np.sinc(xx * voxel_size) * np.sinc(xy * voxel_size) * np.sinc(xz * voxel_size)
    # sum over xi of exp(-2 pi i xi.r_l): one DFT matrix per axis.
    ez, ey, ex = (np.exp(-2j * np.pi * np.outer(r, xi)) for r, xi in zip(r_axes, xi_axes))
    volume = np.einsum("ai,bj,ck,ijk->abc", ez, ey, ex, coefficients)
    return volume.real / np.prod(box)


def peng_numpy(a, b, extra_b=0.0):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return lambda xi2: np.sum(a[:, None] * np.exp(-np.outer(b + extra_b, xi2.ravel()) / 4), 0).reshape(xi2.shape)


def complex_relative_l2(a, b) -> float:
    a, b = np.asarray(a, np.complex128), np.asarray(b, np.complex128)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def small_atoms(seed=0):
    rng = np.random.default_rng(seed)
    return (rng.uniform(-4.0, 4.0, (5, 3)), rng.uniform(-4.0, 4.0, (3, 3)))


# --- NUFFT engines --------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("eps", [1e-4, 1e-9])
def test_type1_nufft_matches_direct_sum_within_eps(x64, backend, eps):
    rng = np.random.default_rng(1)
    shape = (10, 13, 16)
    points = rng.uniform(-9.0, 9.0, (60, 3))  # outside [-pi, pi) too: the sum is periodic
    strengths = rng.normal(size=60) + 1j * rng.normal(size=60)
    reference = direct_type1(shape, strengths, points)
    for iflag in (1, -1):
        out = nufft.nufft_type1(
            shape, jnp.asarray(strengths), jnp.asarray(points), iflag=iflag, eps=eps, backend=backend
        )
        expected = reference if iflag == 1 else direct_type1(shape, strengths, points, -1)
        error = complex_relative_l2(out, expected)
        print(f"type-1 NUFFT {backend} eps={eps:g} iflag={iflag}: {error:.2e}")
        # FINUFFT's eps is a target met to within a small factor; the JAX engine keeps
        # a margin (nufft.kernel_parameters) and meets it.
        assert error <= (2 * eps if backend == "finufft" else eps)


@pytest.mark.parametrize("backend", BACKENDS)
def test_type1_nufft_in_float32(backend):
    rng = np.random.default_rng(2)
    points = jnp.asarray(rng.uniform(-np.pi, np.pi, (500, 3)), jnp.float32)
    shape = (24, 24, 24)
    reference = direct_type1(shape, np.ones(500), np.asarray(points))
    out = nufft.nufft_type1(shape, jnp.ones(500, jnp.complex64), points, eps=1e-6, backend=backend)
    assert out.dtype == jnp.complex64
    # eps, plus the rounding of 500 float32 terms (both engines land at 2-3e-6).
    assert complex_relative_l2(out, reference) <= 4e-6
    # Asked to upsample by 1.25 only, the JAX engine stays near FINUFFT's float32 floor.
    fast = nufft.nufft_type1(
        shape, jnp.ones(500, jnp.complex64), points, backend=backend, opts={"upsampfac": 1.25}
    )
    assert complex_relative_l2(fast, reference) <= 1e-4


@pytest.mark.parametrize("shape", [(10, 13, 16), (9, 12, 7), (12,)])
def test_real_type1_nufft_half_spectra_give_the_real_series(x64, shape):
    """The JAX engine's real-strength route: per group, irfftn of its half spectrum is the
    real part of the centred series (Nyquist modes included), within eps."""
    rng = np.random.default_rng(3)
    points = rng.uniform(-9.0, 9.0, (50, len(shape)))
    sizes = (20, 0, 30)
    axes = tuple(range(len(shape)))
    for iflag in (-1, 1):
        out = nufft.nufft_type1_real_jax(
            shape, jnp.asarray(points), sizes, iflag=iflag, eps=1e-9, upsampfac=1.25
        )
        assert out.shape == (3,) + shape[:-1] + (shape[-1] // 2 + 1,)
        for group, (start, stop) in enumerate([(0, 20), (20, 20), (20, 50)]):
            centred = direct_type1(shape, np.ones(stop - start), points[start:stop], iflag)
            # Re sum_m f[m] exp(2 pi i m.l / n), l from the corner.
            expected = (np.fft.ifftn(np.fft.ifftshift(centred)) * np.prod(shape)).real
            got = np.fft.irfftn(np.asarray(out[group]), s=shape, axes=axes) * np.prod(shape)
            if stop == start:
                assert np.all(got == 0.0)
            else:
                assert relative_l2(got, expected) <= 1e-9
    with pytest.raises(ValueError, match="group_sizes"):
        nufft.nufft_type1_real_jax(shape, jnp.asarray(points), (20, 20))


# --- FFTAtomRenderFn against the explicit band-limited series -------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("sampling_mode", ["average", "point"])
def test_render_equals_float64_fourier_series_within_eps(x64, backend, sampling_mode):
    positions = small_atoms()
    parameters = PengScatteringFactorParameters(np.array([6, 8]))
    a, b = np.asarray(parameters.a), np.asarray(parameters.b)
    shape, voxel_size, eps = (12, 15, 16), 0.8, 1e-9
    volume = IndependentAtomVolume.from_tabulated_parameters(
        positions, parameters, b_factor_by_element=(2.0, 5.0)
    )
    render = FFTAtomRenderFn(shape, voxel_size, sampling_mode=sampling_mode, eps=eps, backend=backend)
    out = render(volume)
    reference = direct_fourier_series(
        positions,
        [peng_numpy(a[0], b[0], 2.0), peng_numpy(a[1], b[1], 5.0)],
        shape,
        voxel_size,
        average=sampling_mode == "average",
    )
    assert out.dtype == jnp.float64 and out.shape == shape
    error = relative_l2(out, reference)
    print(f"FFTAtomRenderFn {backend} {sampling_mode} vs float64 series: {error:.2e}")
    assert error <= eps


@pytest.mark.parametrize("backend", BACKENDS)
def test_render_float32_default_eps(backend):
    positions = small_atoms(3)
    factors = (FourierGaussian(1.5, 10.0), FourierGaussian(0.7, 25.0))
    shape, voxel_size = (16, 16, 16), 1.0
    out = FFTAtomRenderFn(shape, voxel_size, backend=backend)(IndependentAtomVolume(positions, factors))
    reference = direct_fourier_series(
        positions,
        [lambda xi2: 1.5 * np.exp(-10.0 * xi2 / 4), lambda xi2: 0.7 * np.exp(-25.0 * xi2 / 4)],
        shape,
        voxel_size,
    )
    assert out.dtype == jnp.float32
    assert relative_l2(out, reference) <= 1e-5  # eps 1e-6 plus float32 rounding


def test_fourier_gaussian_is_the_transform_of_a_normalized_gaussian():
    """FourierGaussian(a, 8 pi^2 s^2) renders as a gaussian of variance s^2 and mass a,
    with the atom where GaussianMixtureRenderFn puts it (sign of the convention)."""
    positions = np.array([[2.3, -1.7, 0.9], [-3.1, 2.2, -2.6]])
    variance = 2.5  # wide enough to be band-limited at 1 A
    b_factor = 8 * np.pi**2 * variance
    shape = (24, 26, 28)
    fourier = FFTAtomRenderFn(shape, 1.0)(
        IndependentAtomVolume(positions, FourierGaussian(2.0, b_factor))
    )
    real = GaussianMixtureRenderFn(shape, 1.0)(GaussianMixtureVolume(positions, 2.0, variance))
    assert relative_l2(fourier, real) <= 1e-4
    assert float(jnp.sum(fourier)) == pytest.approx(4.0, rel=1e-5)


# --- AdK: the two routes, and the two tables ------------------------------------------


@pytest.fixture(scope="module")
def adk():
    data = np.load(GOLDEN["cubic96"])
    positions, numbers = data["positions_xyz_angstrom"], data["atomic_numbers"]
    by_element, elements = split_atoms_by_element(numbers, positions)
    return positions, numbers, by_element, elements


def test_adk_b80_matches_gaussian_mixture_render(adk):
    positions, numbers, by_element, elements = adk
    shape = (96, 96, 96)
    errors = {}
    for extra_b in (80.0, 0.0):
        # B = 0: the golden exact voxel averages (cryojax, float64) are that reference.
        real = np.load(GOLDEN["cubic96"])["volume_zyx"] if extra_b == 0.0 else (
            GaussianMixtureRenderFn(shape, 1.0)(
                GaussianMixtureVolume.from_tabulated_parameters(
                    positions, PengScatteringFactorParameters(numbers), extra_b
                )
            )
        )
        volume = IndependentAtomVolume.from_tabulated_parameters(
            by_element, PengScatteringFactorParameters(elements), b_factor_by_element=extra_b
        )
        for backend in BACKEND_NAMES if extra_b else BACKEND_NAMES[:1]:
            fourier = FFTAtomRenderFn(shape, 1.0, backend=backend)(volume)
            errors[extra_b, backend] = relative_l2(fourier, real)
    print("AdK 96^3 1 A, FFTAtomRenderFn vs GaussianMixtureRenderFn:", errors)
    for backend in BACKEND_NAMES:
        assert errors[80.0, backend] <= 1e-3
    # Unblurred atoms are sharper than the grid's Nyquist: the band-limited series rings.
    assert 0.2 <= errors[0.0, BACKEND_NAMES[0]] <= 0.4


def test_peng_and_lobato_renders_integrate_to_f0_and_agree(adk):
    _, numbers, by_element, elements = adk
    render = FFTAtomRenderFn((96, 96, 96), 1.0)
    peng = PengScatteringFactorParameters(elements)
    lobato = LobatoScatteringFactorParameters(elements)
    volumes = {
        "peng": IndependentAtomVolume.from_tabulated_parameters(by_element, peng, b_factor_by_element=80.0),
        "lobato": IndependentAtomVolume.from_tabulated_parameters(by_element, lobato, b_factor_by_element=80.0),
    }
    out = {name: np.asarray(render(v), np.float64) for name, v in volumes.items()}
    counts = np.array([len(p) for p in by_element])
    f0 = {
        "peng": float(counts @ np.asarray(peng.a, np.float64).sum(1)),
        "lobato": float(counts @ (2 * np.asarray(lobato.a, np.float64).sum(1))),
    }
    for name in out:
        assert out[name].sum() * 1.0**3 == pytest.approx(f0[name], rel=1e-5)
    error = relative_l2(out["lobato"], out["peng"])
    print(f"AdK B=80: Lobato vs Peng {error:.4f}; f(0) sums {f0}")
    assert error <= 0.02


def test_lobato_is_a_function_of_g_and_peng_of_q():
    """The two fits describe one physical f: Lobato at g = |xi| matches Peng at q = |xi|/2."""
    elements = np.array([6, 7, 8, 16])
    peng = PengScatteringFactorParameters(elements)
    lobato = LobatoScatteringFactorParameters(elements)
    xi = np.stack([np.linspace(0.0, 1.5, 31), np.zeros(31), np.zeros(31)], axis=-1)
    for i in range(len(elements)):
        f_peng = np.asarray(PengScatteringFactor(peng.a[i], peng.b[i])(jnp.asarray(xi)))
        f_lobato = np.asarray(LobatoScatteringFactor(lobato.a[i], lobato.b[i])(jnp.asarray(xi)))
        np.testing.assert_allclose(f_lobato, f_peng, rtol=0.05, atol=0.01)
        # ... and mixing up the variables would not (checks the test can fail).
        wrong = np.sum(peng.a[i][:, None] * np.exp(-np.outer(peng.b[i], xi[:, 0] ** 2)), 0)
        assert np.max(np.abs(np.asarray(wrong) - f_lobato)) > 0.1


def test_lobato_table_covers_h_to_lr_and_names_unsupported():
    parameters = LobatoScatteringFactorParameters(np.arange(1, 104))
    assert parameters.a.shape == (103, 5) and np.all(np.isfinite(parameters.a))
    carbon = LobatoScatteringFactorParameters(np.array([6]))
    assert 2 * float(carbon.a.sum()) == pytest.approx(2.509, abs=2e-3)
    with pytest.raises(UnsupportedElementError, match=r"Rf \(Z=104\)"):
        LobatoScatteringFactorParameters(np.array([6, 104]))


# --- IndependentAtomVolume ------------------------------------------------------------


def test_integer_translation_rolls_and_90_degrees_permutes():
    positions = small_atoms(5)
    volume = IndependentAtomVolume(positions, (FourierGaussian(1.0, 30.0), FourierGaussian(2.0, 50.0)))
    render = FFTAtomRenderFn((21, 21, 21), 1.0)  # odd: the grid maps onto itself
    original = np.asarray(render(volume))
    moved = np.asarray(
        render(volume.translate_to_pose(EulerAnglePose(1.0, -2.0, offset_z_in_angstroms=3.0)))
    )
    assert relative_l2(moved, np.roll(original, (3, -2, 1), axis=(0, 1, 2))) <= 1e-5
    rotated = np.asarray(render(volume.rotate_to_pose(EulerAnglePose(phi_angle=90.0))))
    assert relative_l2(rotated, np.transpose(original[:, ::-1, :], (0, 2, 1))) <= 1e-5


def test_volume_checks_its_pytrees():
    with pytest.raises(ValueError, match="structure"):
        IndependentAtomVolume((np.zeros((2, 3)), np.zeros((1, 3))), (FourierGaussian(),))
    with pytest.raises(TypeError, match="AbstractFourierOperator"):
        IndependentAtomVolume((np.zeros((2, 3)),), (1.0,))
    with pytest.raises(ValueError, match=r"\(n_atoms, 3\)"):
        IndependentAtomVolume(np.zeros((2, 2)), FourierGaussian())
    with pytest.raises(ValueError, match="2 B-factors for 3 elements"):
        IndependentAtomVolume.from_tabulated_parameters(
            (np.zeros((1, 3)),) * 3,
            PengScatteringFactorParameters(np.array([1, 6, 8])),
            b_factor_by_element=(1.0, 2.0),
        )


def test_operators_compose():
    xi = jnp.asarray(np.random.default_rng(0).normal(size=(7, 3)) * 0.3)
    g, s = FourierGaussian(2.0, 10.0), FourierSinc(1.5)
    np.testing.assert_allclose((g * s + 1.0)(xi), g(xi) * s(xi) + 1.0, rtol=1e-6)
    expected = 2.0 * np.exp(-10.0 * np.sum(np.asarray(xi) ** 2, -1) / 4)
    np.testing.assert_allclose(g(xi), expected, rtol=1e-6)
    # A composed (not radial) factor renders through the general path, same volume.
    positions = small_atoms(9)[0]
    render = FFTAtomRenderFn((16, 16, 16), 1.0)
    composed = render(IndependentAtomVolume(positions, 2.0 * FourierGaussian(1.0, 30.0)))
    plain = render(IndependentAtomVolume(positions, FourierGaussian(2.0, 30.0)))
    assert relative_l2(composed, plain) <= 1e-6


# --- options, engines, transforms -----------------------------------------------------


@needs_finufft
def test_missing_jax_finufft_is_an_install_message_at_construction(monkeypatch):
    monkeypatch.setattr(nufft, "jax_finufft", None)
    with pytest.raises(ImportError, match="pip install jax-finufft"):
        FFTAtomRenderFn((8, 8, 8), 1.0, backend="finufft")
    # 'auto' quietly takes the JAX engine and renders the same volume.
    volume = IndependentAtomVolume(small_atoms()[0], FourierGaussian(1.0, 40.0))
    auto = FFTAtomRenderFn((16, 16, 16), 1.0)(volume)
    monkeypatch.undo()
    with_finufft = FFTAtomRenderFn((16, 16, 16), 1.0, backend="finufft")(volume)
    assert relative_l2(auto, with_finufft) <= 1e-5


def test_backend_follows_the_device():
    on_cpu = "cpu" in nufft.jax_finufft_platforms()
    assert nufft.resolve_backend("auto", "cpu") == ("finufft" if on_cpu else "jax")
    assert nufft.resolve_backend("jax", "cpu") == "jax"
    if nufft.jax_finufft is None:
        with pytest.raises(ImportError, match="pip install jax-finufft"):
            FFTAtomRenderFn((8, 8, 8), 1.0, backend="finufft")
    if "gpu" not in nufft.jax_finufft_platforms():  # PyPI's jax-finufft: CPU only
        assert nufft.resolve_backend("auto", "gpu") == "jax"
        installed = nufft.jax_finufft is not None
        with pytest.raises(RuntimeError if installed else ImportError, match="backend='jax'"):
            nufft.resolve_backend("finufft", "gpu")
    with pytest.raises(ValueError, match="backend"):
        FFTAtomRenderFn((8, 8, 8), 1.0, backend="cufinufft")


def test_fourier_outputs_and_frequency_grid():
    from cryoensemble.coordinates import make_frequency_grid

    volume = IndependentAtomVolume(small_atoms()[1], FourierGaussian(1.0, 20.0))
    shape = (10, 12, 14)
    render = FFTAtomRenderFn(shape, 0.9)
    real = np.asarray(render(volume), np.float64)
    rfft = render(volume, outputs_real_space=False, outputs_rfft=True)
    shifted = render(volume, outputs_real_space=False, fftshifted=True)
    scale = np.abs(rfft).max()
    # cryojax's convention: phases about the origin voxel n // 2 (ifftshift first).
    centred = np.fft.ifftshift(real)
    np.testing.assert_allclose(rfft, np.fft.rfftn(centred), atol=1e-5 * scale)
    np.testing.assert_allclose(shifted, np.fft.fftshift(np.fft.fftn(centred)), atol=1e-5 * scale)
    grid = jnp.fft.fftshift(make_frequency_grid(shape, 0.9, outputs_rfftfreqs=False), axes=(0, 1, 2))
    given = FFTAtomRenderFn(shape, 0.9, frequency_grid=grid)(volume)
    np.testing.assert_allclose(given, real, atol=1e-6 * np.abs(real).max())


@pytest.mark.parametrize("backend", BACKENDS)
def test_jit_vmap_and_gradients(x64, backend):
    positions = small_atoms(7)[0]
    shape = (12, 12, 12)
    weights = np.random.default_rng(8).normal(size=shape)
    render = FFTAtomRenderFn(shape, 1.0, eps=1e-10, backend=backend)

    def loss(p):
        return jnp.sum(render(IndependentAtomVolume(p, FourierGaussian(1.0, 30.0))) * weights)

    eager = loss(positions)
    assert float(jax.jit(loss)(positions)) == pytest.approx(float(eager), rel=1e-9)
    stacked = jax.vmap(loss)(jnp.stack([positions, positions + 0.5]))
    assert float(stacked[1]) == pytest.approx(float(loss(positions + 0.5)), rel=1e-9)
    gradient = jax.grad(loss)(positions)
    step = 1e-5
    for index in [(0, 0), (2, 1), (4, 2)]:
        plus, minus = positions.copy(), positions.copy()
        plus[index] += step
        minus[index] -= step
        numeric = (loss(plus) - loss(minus)) / (2 * step)
        assert float(gradient[index]) == pytest.approx(float(numeric), rel=1e-5, abs=1e-9)


# --- AutoVolumeRenderFn ---------------------------------------------------------------


def test_auto_render_dispatches_and_passes_options():
    positions = small_atoms()[0]
    shape = (16, 16, 16)
    gaussians = GaussianMixtureVolume(positions, 1.0, 0.8)
    atoms = IndependentAtomVolume(positions, FourierGaussian(1.0, 8 * np.pi**2 * 0.8))
    auto = AutoVolumeRenderFn(shape, 1.0)
    assert isinstance(auto.select_render_fn(gaussians), GaussianMixtureRenderFn)
    assert isinstance(auto.select_render_fn(atoms), FFTAtomRenderFn)
    # Equal up to the order of atomic adds on a GPU.
    np.testing.assert_allclose(auto(gaussians), GaussianMixtureRenderFn(shape, 1.0)(gaussians), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(auto(atoms), FFTAtomRenderFn(shape, 1.0)(atoms), rtol=1e-6, atol=1e-10)
    point = AutoVolumeRenderFn(shape, 1.0, options={"sampling_mode": "point", "backend": "jax"})
    chosen = point.select_render_fn(atoms)
    assert chosen.sampling_mode == "point" and chosen.backend == "jax"
    np.testing.assert_allclose(
        point(atoms, outputs_real_space=False, outputs_rfft=True),
        FFTAtomRenderFn(shape, 1.0, sampling_mode="point")(
            atoms, outputs_real_space=False, outputs_rfft=True
        ),
        atol=1e-5,
    )


def test_auto_render_names_what_it_cannot_render():
    voxels = FourierVoxelGridVolume.from_real_voxel_grid(np.zeros((8, 8, 8)))
    with pytest.raises(TypeError, match="cannot render a FourierVoxelGridVolume.*GaussianMixtureVolume"):
        AutoVolumeRenderFn((8, 8, 8), 1.0)(voxels)
    with pytest.raises(TypeError, match="unexpected keyword"):
        AutoVolumeRenderFn((8, 8, 8), 1.0, options={"no_such_option": 1})(
            IndependentAtomVolume(np.zeros((1, 3)), FourierGaussian())
        )
