"""Type-1 non-uniform FFTs: jax-finufft where it runs, a JAX-native one everywhere.

A type-1 NUFFT sums exponentials of non-uniform points onto uniform modes,

    f[k] = sum_j c_j exp(i * iflag * k . x_j),   k_d = -(n_d // 2) .. (n_d - 1) // 2,

with points `x_j` in radians (periodic in 2 pi) and modes returned centred (mode k_d at
index k_d + n_d // 2), as jax-finufft returns them by default.

jax-finufft (the Flatiron FINUFFT library) is the engine where it is installed and built
for the array's device; PyPI's wheels are CPU-only. The JAX-native fallback
(`nufft_type1_jax`) runs on any JAX device: it spreads each point with the
"exponential of semicircle" kernel of FINUFFT, `phi(t) = exp(beta (sqrt(1 - (2t/w)^2) - 1))`
on `w` grid points, onto a grid `upsampfac` times finer, takes its FFT, and divides by the
kernel's Fourier transform. Width and shape follow FINUFFT's rules for a tolerance `eps`,
so both engines meet the same relative error. `nufft_type1_real_jax` is its form for
unit (real) strengths in groups, as the Fourier renderer needs: real fine grids, one
scatter and one batched real FFT for all groups, rfft half-spectra out.
"""

import math
from functools import lru_cache
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Complex, Float


Backend = Literal["auto", "finufft", "jax"]
BACKENDS = ("auto", "finufft", "jax")
INSTALL_HINT = "pip install jax-finufft  (or: pip install 'cryoensemble[nufft]')"

try:
    import jax_finufft
except ImportError as error:  # an optional dependency
    jax_finufft = None
    JAX_FINUFFT_IMPORT_ERROR: ImportError | None = error
else:
    JAX_FINUFFT_IMPORT_ERROR = None
    # jax-finufft <= 1.3.1's vmap rule reads `batching.not_mapped`, which JAX 0.10 removed
    # (an unmapped axis is `None`, the old alias' value): restore the alias, or `vmap`
    # over the finufft engine fails with an AttributeError.
    from jax._src.interpreters import batching as _batching

    if not hasattr(_batching, "not_mapped"):
        _batching.not_mapped = None


def jax_finufft_platforms() -> tuple[str, ...]:
    """The JAX platforms the installed jax-finufft was built for (empty if none)."""
    if jax_finufft is None:
        return ()
    try:
        from jax_finufft import lowering
    except ImportError:  # pragma: no cover - a broken install
        return ()
    gpu = getattr(lowering, "jax_finufft_gpu", None) is not None
    return ("cpu", "gpu", "cuda") if gpu else ("cpu",)


def require_jax_finufft(platform: str | None = None) -> None:
    """Raise a clear error unless jax-finufft can run on `platform` (any, if None)."""
    if jax_finufft is None:
        raise ImportError(
            "The 'finufft' NUFFT backend needs jax-finufft, which is not installed: "
            f"{INSTALL_HINT}. Or use backend='jax' (pure JAX, any device)."
        ) from JAX_FINUFFT_IMPORT_ERROR
    if platform is not None and platform not in jax_finufft_platforms():
        raise RuntimeError(
            f"The installed jax-finufft has no support for the '{platform}' platform "
            f"(built for: {', '.join(jax_finufft_platforms())}); install a jax-finufft "
            "built for it (see its README for CUDA builds) or use backend='jax'."
        )


def array_platform(array) -> str:
    """The platform of a concrete array, or JAX's default one for a traced array."""
    try:
        devices = array.devices()
    except (AttributeError, jax.errors.ConcretizationTypeError):
        return jax.default_backend()
    return next(iter(devices)).platform


def resolve_backend(backend: Backend, platform: str) -> Literal["finufft", "jax"]:
    """`'auto'`: jax-finufft where it supports `platform`, else the JAX-native NUFFT."""
    if backend == "auto":
        return "finufft" if platform in jax_finufft_platforms() else "jax"
    if backend == "finufft":
        require_jax_finufft(platform)
    return backend


def _smooth_size(n: int) -> int:
    """The smallest even integer >= n with no prime factors but 2, 3 and 5 (fast FFTs)."""
    candidate = max(2, n + (n % 2))
    while True:
        x = candidate
        for p in (2, 3, 5):
            while x % p == 0:
                x //= p
        if x == 1:
            return candidate
        candidate += 2


# FINUFFT's rules, given eps / 3: its own (newer, tuned) kernels beat the textbook
# exponential of semicircle by up to ~3x at a width, so this keeps the error under eps.
_TOLERANCE_MARGIN = 3.0


@lru_cache(maxsize=64)
def kernel_parameters(eps: float, upsampfac: float, max_width: int = 16) -> tuple[int, float]:
    """The spreading kernel for tolerance `eps`: (width in fine-grid points, beta).

    FINUFFT's width and shape rules (ES kernel), applied to `eps / 3`, at most `max_width`.
    """
    eps = eps / _TOLERANCE_MARGIN
    if upsampfac == 2.0:
        width = math.ceil(-math.log10(eps / 10.0))
    else:
        width = math.ceil(-math.log(eps) / (math.pi * math.sqrt(1.0 - 1.0 / upsampfac)))
    width = min(max(width, 2), max_width)
    if upsampfac == 2.0:
        beta_over_width = {2: 2.20, 3: 2.26, 4: 2.38}.get(width, 2.30)
    else:
        beta_over_width = 0.97 * math.pi * (1.0 - 1.0 / (2.0 * upsampfac))
    return width, beta_over_width * width


def _kernel(t, width: int, beta: float):
    """phi(t) on |t| <= width / 2 (t in fine-grid points), zero outside."""
    z = 2.0 * t / width
    inside = jnp.abs(z) < 1.0
    value = jnp.exp(beta * (jnp.sqrt(jnp.where(inside, 1.0 - z * z, 0.0)) - 1.0))
    return jnp.where(inside, value, 0.0)


def _deconvolution_at(modes: np.ndarray, n_fine: int, width: int, beta: float) -> np.ndarray:
    """1 / phi_hat(k h) at integer modes k (h = 2 pi / n_fine), float64."""
    nodes, weights = np.polynomial.legendre.leggauss(4 * width + 40)
    t = nodes * width / 2.0  # quadrature over the kernel's support, in grid points
    phi = np.exp(beta * (np.sqrt(1.0 - nodes**2) - 1.0)) * weights * width / 2.0
    phi_hat = np.cos(np.outer(np.asarray(modes) * 2.0 * np.pi / n_fine, t)) @ phi
    return 1.0 / phi_hat


@lru_cache(maxsize=64)
def _deconvolution(n: int, n_fine: int, width: int, beta: float) -> np.ndarray:
    """1 / phi_hat(k h) for the centred modes of one axis (h = 2 pi / n_fine), float64."""
    return _deconvolution_at(np.arange(-(n // 2), (n + 1) // 2), n_fine, width, beta)


def nufft_type1_jax(
    shape: tuple[int, ...],
    strengths: Complex[Array, " n_points"],
    points: Float[Array, "n_points ndim"],
    *,
    iflag: int = 1,
    eps: float = 1e-6,
    upsampfac: float = 2.0,
    batch_size: int = 65536,
) -> Complex[Array, "..."]:
    """A type-1 NUFFT in pure JAX (any device, differentiable, `jit`/`vmap`-able).

    **Arguments:**

    - `shape`: the number of modes per axis, 1 to 3 axes.
    - `strengths`: the complex weights c_j.
    - `points`: the points in radians, one column per axis of `shape` (any real values:
      the sum is 2 pi periodic).
    - `iflag`: the sign of the exponent, +1 or -1.
    - `eps`: the relative tolerance; it sets the kernel's width.
    - `upsampfac`: the fine grid is this many times the number of modes (2 or ~1.25).
    - `batch_size`: points spread per step; bounds memory to `batch_size * w^ndim`.

    **Returns:**

    The modes, centred: mode k at index `k + n // 2` of each axis.
    """
    shape = tuple(int(n) for n in shape)
    ndim = len(shape)
    points = jnp.asarray(points)
    if points.ndim != 2 or points.shape[1] != ndim:
        raise ValueError(f"nufft_type1_jax: points must be (n_points, {ndim}); got {points.shape}")
    if iflag not in (1, -1):
        raise ValueError(f"nufft_type1_jax: iflag must be +1 or -1; got {iflag}")
    real_dtype = jnp.result_type(points.dtype, jnp.float32)
    complex_dtype = jnp.result_type(real_dtype, jnp.complex64)
    points = points.astype(real_dtype)
    strengths = jnp.asarray(strengths).astype(complex_dtype)
    # In float32 at upsampfac < 2 the deconvolution amplifies the fine grid's rounding
    # more the wider (sharper-edged) the kernel: 8 points is the most accurate (~3e-5).
    single = jnp.dtype(real_dtype) == jnp.float32
    max_width = 8 if single and upsampfac < 2.0 else 16
    width, beta = kernel_parameters(float(eps), float(upsampfac), max_width)
    fine = tuple(_smooth_size(max(math.ceil(upsampfac * n), 2 * width)) for n in shape)

    n_points = points.shape[0]
    batch = max(1, min(int(batch_size), n_points))
    n_steps = -(-n_points // batch)
    pad = n_steps * batch - n_points
    points = jnp.concatenate([points, jnp.zeros((pad, ndim), real_dtype)])
    strengths = jnp.concatenate([strengths, jnp.zeros((pad,), complex_dtype)])
    offsets = jnp.arange(width, dtype=real_dtype)
    strides = np.cumprod((1,) + fine[::-1][:-1])[::-1]  # row-major strides of the fine grid

    def spread(grid, chunk):
        x, c = chunk
        index = None
        weight = c
        for d in range(ndim):
            # Fine-grid coordinate in [0, n_fine); the kernel covers `width` points from
            # the first one at or after u - width / 2.
            u = jnp.mod(x[:, d], 2.0 * np.pi) * (fine[d] / (2.0 * np.pi))
            first = jnp.ceil(u - width / 2.0)
            values = _kernel(first[:, None] + offsets - u[:, None], width, beta)
            idx = jnp.mod(first.astype(jnp.int32)[:, None] + offsets.astype(jnp.int32), fine[d])
            expand = (slice(None),) + (None,) * d + (slice(None),)
            weight = weight.reshape(weight.shape + (1,)) * values[expand].astype(complex_dtype)
            term = (idx * int(strides[d]))[expand]
            index = term if index is None else index[..., None] + term
        return grid.at[index.reshape(-1)].add(weight.reshape(-1)), None

    grid = jnp.zeros(math.prod(fine), complex_dtype)
    chunks = (points.reshape(n_steps, batch, ndim), strengths.reshape(n_steps, batch))
    if n_steps == 1:
        grid, _ = spread(grid, jax.tree.map(lambda a: a[0], chunks))
    else:
        grid, _ = jax.lax.scan(spread, grid, chunks)
    grid = grid.reshape(fine)
    # sum_l b_l exp(i iflag 2 pi k l / N): an inverse FFT (times N) for iflag = +1.
    spectrum = jnp.fft.ifftn(grid) * math.prod(fine) if iflag == 1 else jnp.fft.fftn(grid)
    for d, (n, n_fine) in enumerate(zip(shape, fine)):
        modes = np.arange(-(n // 2), (n + 1) // 2) % n_fine
        spectrum = jnp.take(spectrum, jnp.asarray(modes), axis=d)
        correction = _deconvolution(n, n_fine, width, beta).astype(np.dtype(real_dtype))
        spectrum = spectrum * jnp.asarray(correction).reshape((n,) + (1,) * (ndim - 1 - d))
    return spectrum


def _axis_modes(n: int, half: bool) -> tuple[np.ndarray, np.ndarray]:
    """The modes of one output axis in FFT order, as two conventions for the Nyquist.

    `(minus, plus)`: `m = 0 .. (n - 1) // 2, -(n // 2) .. -1` (the last axis of an rfft
    layout: `0 .. n // 2`); for even `n` the Nyquist entry is `-n / 2` in `minus` and
    `+n / 2` in `plus`, elsewhere the two agree.
    """
    minus = np.fft.rfftfreq(n, 1.0 / n) if half else np.fft.fftfreq(n, 1.0 / n)
    minus = np.rint(minus).astype(np.int64)
    if half:
        minus = minus.copy()
        if n % 2 == 0:
            minus[-1] = -(n // 2)
    plus = np.where(minus == -(n // 2), n // 2, minus) if n % 2 == 0 else minus
    return minus, plus


def nufft_type1_real_jax(
    shape: tuple[int, ...],
    points: Float[Array, "n_points ndim"],
    group_sizes: tuple[int, ...],
    *,
    iflag: int = -1,
    eps: float = 1e-6,
    upsampfac: float | None = None,
    batch_size: int = 16384,
) -> Complex[Array, "n_groups ..."]:
    """Type-1 NUFFTs of unit strengths, one per group of points, as rfft half-spectra.

    For group `g` (the next `group_sizes[g]` rows of `points`) this is
    `f_g[m] = sum_j exp(i * iflag * m . x_j)` laid out as `jnp.fft.rfftn` lays out a
    spectrum (zero frequency first, last axis `0 .. n // 2`), so that
    `jnp.fft.irfftn(f_g, shape) * prod(shape)` is the real part of the series
    `sum_m f_g[m] exp(2 pi i m.l / n)` over the centred modes
    `m_d = -(n_d // 2) .. (n_d - 1) // 2`. An even axis' Nyquist entry holds the mean of
    the `-n/2` and `+n/2` sums (all Nyquist components flipped together; in the last
    axis' Nyquist plane, the plane's Hermitian part), which is what that real part needs.

    The strengths are real, so the fine grid is real: half the spreading traffic and
    half the FFT of a complex NUFFT. All groups spread in one scatter and transform in one
    batched FFT.

    **Arguments:**

    - `shape`: the number of modes per axis, 1 to 3 axes.
    - `points`: the points in radians, one column per axis (any real values: periodic).
    - `group_sizes`: the number of points of each group, in order (summing to `n_points`).
    - `iflag`: the sign of the exponent, -1 or +1.
    - `eps`: the relative tolerance; it sets the kernel's width.
    - `upsampfac`: the fine grid is this many times the number of modes (1.25 to 2);
      `None`: `default_upsampfac_real` of the points' precision.
    - `batch_size`: points spread per step; bounds memory to `batch_size * w^ndim`.

    **Returns:**

    `(n_groups, *shape[:-1], shape[-1] // 2 + 1)` complex modes.
    """
    shape = tuple(int(n) for n in shape)
    group_sizes = tuple(int(g) for g in group_sizes)
    ndim = len(shape)
    points = jnp.asarray(points)
    if points.ndim != 2 or points.shape[1] != ndim:
        raise ValueError(f"nufft_type1_real_jax: points must be (n_points, {ndim}); got {points.shape}")
    if sum(group_sizes) != points.shape[0] or min(group_sizes, default=0) < 0 or not group_sizes:
        raise ValueError(
            f"nufft_type1_real_jax: group_sizes {group_sizes} must be non-negative and sum to "
            f"the {points.shape[0]} points"
        )
    if iflag not in (1, -1):
        raise ValueError(f"nufft_type1_real_jax: iflag must be +1 or -1; got {iflag}")
    real_dtype = jnp.result_type(points.dtype, jnp.float32)
    points = points.astype(real_dtype)
    if upsampfac is None:
        upsampfac = default_upsampfac_real(real_dtype)
    single = jnp.dtype(real_dtype) == jnp.float32
    max_width = 8 if single and upsampfac < 2.0 else 16
    width, beta = kernel_parameters(float(eps), float(upsampfac), max_width)
    fine = tuple(_smooth_size(max(math.ceil(upsampfac * n), 2 * width)) for n in shape)
    n_fine = math.prod(fine)
    if n_fine >= 2**31:
        raise ValueError(
            f"nufft_type1_real_jax: a fine grid of {fine} has 2^31 points or more; use a "
            "smaller grid or upsampfac"
        )
    n_groups = len(group_sizes)
    groups = np.repeat(np.arange(n_groups, dtype=np.int32), group_sizes)

    n_points = points.shape[0]
    batch = max(1, min(int(batch_size), n_points))
    n_steps = -(-n_points // batch)
    pad = n_steps * batch - n_points
    # Padding points spread zeros (their group's weight is masked below).
    points = jnp.concatenate([points, jnp.zeros((pad, ndim), real_dtype)])
    valid = np.concatenate([np.ones(n_points, bool), np.zeros(pad, bool)])
    groups = np.concatenate([groups, np.zeros(pad, np.int32)])
    offsets = np.arange(width)
    strides = np.cumprod((1,) + fine[::-1][:-1])[::-1]  # row-major strides of a fine grid

    def spread(grid, chunk):
        x, group, keep = chunk
        index, weight = None, jnp.where(keep, 1.0, 0.0).astype(real_dtype)
        for d in range(ndim):
            # Fine-grid coordinate in [0, n_fine); the kernel covers `width` points from
            # the first one at or after u - width / 2.
            u = jnp.mod(x[:, d], 2.0 * np.pi) * (fine[d] / (2.0 * np.pi))
            first = jnp.ceil(u - width / 2.0)
            values = _kernel(first[:, None] + offsets.astype(real_dtype) - u[:, None], width, beta)
            idx = jnp.mod(first.astype(jnp.int32)[:, None] + offsets.astype(np.int32), fine[d])
            expand = (slice(None),) + (None,) * d + (slice(None),)
            weight = weight.reshape(weight.shape + (1,)) * values[expand]
            term = (idx * int(strides[d]))[expand]
            index = term if index is None else index[..., None] + term
        group = jnp.broadcast_to(group.reshape((-1,) + (1,) * ndim), index.shape)
        return grid.at[group.reshape(-1), index.reshape(-1)].add(weight.reshape(-1)), None

    grid = jnp.zeros((n_groups, n_fine), real_dtype)
    chunks = (
        points.reshape(n_steps, batch, ndim),
        jnp.asarray(groups).reshape(n_steps, batch),
        jnp.asarray(valid).reshape(n_steps, batch),
    )
    if n_steps == 1:
        grid, _ = spread(grid, jax.tree.map(lambda a: a[0], chunks))
    else:
        grid, _ = jax.lax.scan(spread, grid, chunks)
    # sum_l b_l exp(-i 2 pi k l / N): the forward real FFT.
    spectrum = jnp.fft.rfftn(grid.reshape((n_groups,) + fine), axes=tuple(range(1, ndim + 1)))
    # The output modes, read off the fine spectrum; both Nyquist conventions, averaged.
    axes = [_axis_modes(n, half=(d == ndim - 1)) for d, n in enumerate(shape)]
    deconvolution = [
        _deconvolution_at(m_minus, n_fine_d, width, beta).astype(np.dtype(real_dtype))
        for (m_minus, _), n_fine_d in zip(axes, fine)
    ]

    def read(convention):
        out = spectrum
        for d, (modes, n_fine_d) in enumerate(zip(convention, fine)):
            out = jnp.take(out, jnp.asarray(modes % n_fine_d), axis=d + 1)
        return out

    if shape[-1] % 2 == 0:
        # The last axis' Nyquist plane: the Hermitian part of the all-plus convention.
        minus = [a[0] for a in axes[:-1]] + [axes[-1][1]]
        plus = [a[1] for a in axes]
    else:
        minus, plus = [a[0] for a in axes], [a[1] for a in axes]
    modes = 0.5 * (read(minus) + read(plus))
    if shape[-1] % 2 == 0:
        nyquist = read(plus)[..., -1]
        flipped = nyquist
        for d in range(1, ndim):
            flipped = jnp.roll(jnp.flip(flipped, axis=d), 1, axis=d)
        modes = modes.at[..., -1].set(0.5 * (nyquist + jnp.conj(flipped)))
    for d, correction in enumerate(deconvolution):
        modes = modes * jnp.asarray(correction).reshape((-1,) + (1,) * (ndim - 1 - d))
    return modes if iflag == -1 else jnp.conj(modes)


def _as_dict(opts: Any) -> dict | None:
    """Options given as a dict or as its items (hashable, for static fields)."""
    if isinstance(opts, dict):
        return opts
    if isinstance(opts, tuple) and all(isinstance(i, tuple) and len(i) == 2 for i in opts):
        return dict(opts)
    return None


def upsampfac_from(opts: Any) -> float | None:
    """The `upsampfac` of a jax-finufft `Opts`/`NestedOpts` or a dict, if it sets one."""
    if opts is None:
        return None
    as_dict = _as_dict(opts)
    if as_dict is not None:
        value = as_dict.get("upsampfac")
    else:
        value = getattr(getattr(opts, "forward", opts), "upsampfac", None)
    return float(value) if value else None


def _finufft_opts(opts: Any):
    """jax-finufft's options object from `opts` (None, an Opts, or a dict of its fields)."""
    as_dict = _as_dict(opts)
    if as_dict is None:
        return opts
    from jax_finufft.options import Opts

    return Opts(**as_dict)


def default_upsampfac(dtype) -> float:
    """The fine grid's upsampling when the options set none, by precision.

    In float64, 1.25: a wider kernel but a ~4x smaller 3D FFT than FINUFFT's usual 2.0,
    ~3x faster at 96^3 on a CPU, and as accurate. In float32, 2.0: at 1.25 the
    deconvolution amplifies float32 rounding of the fine grid at the highest modes
    (to ~5e-5 relative in FINUFFT, worse for wide kernels), so eps = 1e-6 needs 2.0.
    """
    return 1.25 if jnp.dtype(dtype) == jnp.float64 else 2.0


def default_upsampfac_real(dtype) -> float:
    """`nufft_type1_real_jax`'s upsampling when none is given, by precision.

    In float64, 1.25 (as `default_upsampfac`). In float32, 1.5: the deconvolution's
    amplification of the fine grid's rounding at the highest modes, which costs 1.25 a
    factor of several in accuracy, is down to what 2.0 gives, on a fine grid less than
    half of 2.0's (the FFT is most of the time on a GPU).
    """
    return 1.25 if jnp.dtype(dtype) == jnp.float64 else 1.5


def nufft_type1(
    shape: tuple[int, ...],
    strengths: Complex[Array, " n_points"],
    points: Float[Array, "n_points ndim"],
    *,
    iflag: int = 1,
    eps: float = 1e-6,
    backend: Literal["finufft", "jax"] = "jax",
    opts: Any = None,
) -> Complex[Array, "..."]:
    """A type-1 NUFFT on the chosen engine; see `nufft_type1_jax` for the arguments.

    `opts` is a jax-finufft `Opts`/`NestedOpts` (or a dict of `Opts` fields) for
    `'finufft'`; the JAX engine reads only its `upsampfac`. Where `opts` is `None` both
    engines upsample by `default_upsampfac` of the points' precision.
    """
    points = jnp.asarray(points)
    if backend == "finufft":
        require_jax_finufft()
        if opts is None:
            opts = {"upsampfac": default_upsampfac(points.dtype)}
        complex_dtype = jnp.result_type(points.dtype, jnp.complex64)
        # jax-finufft wraps points into [-pi, pi) itself only within [-3 pi, 3 pi).
        wrapped = jnp.mod(points + np.pi, 2.0 * np.pi) - np.pi
        return jax_finufft.nufft1(
            tuple(int(n) for n in shape),
            jnp.asarray(strengths).astype(complex_dtype),
            *[wrapped[:, d] for d in range(wrapped.shape[1])],
            iflag=iflag,
            eps=eps,
            opts=_finufft_opts(opts),
        )
    if backend == "jax":
        upsampfac = upsampfac_from(opts) or default_upsampfac(points.dtype)
        return nufft_type1_jax(
            shape, strengths, points, iflag=iflag, eps=eps, upsampfac=upsampfac
        )
    raise ValueError(f"nufft_type1: backend must be 'finufft' or 'jax'; got {backend!r}")
