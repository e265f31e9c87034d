"""FFTAtomRenderFn: an IndependentAtomVolume rendered through its Fourier series.

For a box of side `L_j = n_j dr` the rendered volume is the band-limited Fourier series

    U_l = 1 / (L_x L_y L_z) sum_xi S(xi) sum_types f_type(xi) sum_n exp(2 pi i xi.(r_n - r_l)),

over the grid's frequencies `xi = m / L` (`m_j = -(n_j // 2) .. (n_j - 1) // 2`), with
`S(xi) = prod_j sinc(xi_j dr)` (the voxel's average) for `sampling_mode='average'` and 1
for `'point'` (the value at the voxel's centre). The sums over atoms are one type-1 NUFFT
per atom type; the sum over frequencies is an FFT.

Choosing between this and `GaussianMixtureRenderFn`: the two agree where the potential is
band-limited by the grid, i.e. where `f(xi)` has decayed at the Nyquist frequency
`1 / (2 dr)`. Atoms are sharper than that at usual voxel sizes (Peng's smallest b_i are
~0.1-0.5 A^2, and hydrogen and carbon cores are narrower than a 1 A voxel), so at B = 0 the
Fourier route drops the frequencies beyond Nyquist and rings (on AdK at 1 A, ~30%
relative L2 from the exact voxel averages), while with an extra B-factor of 80 A^2
they agree to ~6e-4. The exact voxel averages of `GaussianMixtureRenderFn` are what a detector of
that voxel size would integrate; this renderer is what a band-limited (Fourier-space)
pipeline sees, and it takes any scattering factor, Lobato's (not a sum of gaussians)
included.
"""

import functools
import math
from typing import Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Inexact

from ...ndimage.fourier_operators import (
    AbstractFourierOperator,
    AbstractRadialFourierOperator,
    FourierSinc,
)
from .._volume.independent_atom import IndependentAtomVolume
from ...ndimage.nufft import (
    BACKENDS,
    array_platform,
    nufft_type1,
    nufft_type1_real_jax,
    require_jax_finufft,
    resolve_backend,
    upsampfac_from,
)
from .base_rendering import AbstractVolumeRenderFn, real_to_requested_space


def _is_operator(x) -> bool:
    return isinstance(x, AbstractFourierOperator)


class FFTAtomRenderFn(AbstractVolumeRenderFn):
    """Render an `IndependentAtomVolume` with non-uniform FFTs (band-limited).

    See the module docstring for the formula and for when to prefer
    `GaussianMixtureRenderFn`. The NUFFT engine is jax-finufft where it is installed and
    built for the device of the positions (PyPI's wheels: CPU), and otherwise a JAX-native
    type-1 NUFFT (`cryoensemble.ndimage.nufft`) that meets the same `eps` on any device;
    it spreads every atom type onto real fine grids in one scatter, transforms them in one
    batched real FFT, and weights and sums the types on the half spectrum before one
    inverse real FFT. Calls compile themselves (once per grid, options and atom-type layout), and compose
    with `jit`, `vmap` and `grad` (positions and factor parameters).
    """

    shape: tuple[int, int, int] = eqx.field(static=True)
    voxel_size: Float[Array, ""]
    frequency_grid: Float[Array, "nz ny nx 3"] | None
    sampling_mode: Literal["average", "point"] = eqx.field(static=True)
    eps: float = eqx.field(static=True)
    opts: Any = eqx.field(static=True)
    backend: Literal["auto", "finufft", "jax"] = eqx.field(static=True)

    def __init__(
        self,
        shape: tuple[int, int, int],
        voxel_size,
        *,
        frequency_grid: Float[Array, "nz ny nx 3"] | None = None,
        sampling_mode: Literal["average", "point"] = "average",
        eps: float = 1e-6,
        opts: Any = None,
        backend: Literal["auto", "finufft", "jax"] = "auto",
    ):
        """**Arguments:**

        - `shape`: the grid shape (nz, ny, nx).
        - `voxel_size`: the voxel size in A.
        - `frequency_grid`: the grid's frequencies in A^-1, zero frequency in the centre,
          `jnp.fft.fftshift(make_frequency_grid(shape, voxel_size, outputs_rfftfreqs=False),
          axes=(0, 1, 2))`; computed on each call if `None`.
        - `sampling_mode`: `'average'`: each voxel holds the average of the
          (band-limited) potential over the voxel; `'point'`: its value at the centre.
        - `eps`: the relative tolerance of the NUFFTs.
        - `opts`: a `jax_finufft.options.Opts` or `NestedOpts` for jax-finufft, or a dict
          of `Opts` fields; the JAX engine reads only `upsampfac`. Default: jax-finufft
          upsamples the grid by 2 in float32 and the JAX engine by 1.5 (as accurate, a
          smaller FFT), both by 1.25 in float64 (`nufft.default_upsampfac`,
          `nufft.default_upsampfac_real`). `{"upsampfac": 1.25}` is faster still in
          float32, at several times the error in the highest frequencies (cryojax's
          default accuracy).
        - `backend`: `'auto'` (jax-finufft where it supports the device, else JAX),
          `'finufft'` (jax-finufft; an ImportError here if it is not installed) or
          `'jax'`.
        """
        shape = tuple(int(s) for s in shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"FFTAtomRenderFn: shape must be three positive integers; got {shape}")
        if sampling_mode not in ("average", "point"):
            raise ValueError(
                f"FFTAtomRenderFn: sampling_mode must be 'average' or 'point'; got {sampling_mode!r}"
            )
        if backend not in BACKENDS:
            raise ValueError(f"FFTAtomRenderFn: backend must be one of {BACKENDS}; got {backend!r}")
        if not 0 < eps < 1:
            raise ValueError(f"FFTAtomRenderFn: eps must be in (0, 1); got {eps}")
        if backend == "finufft":
            # Fail here, with the install command, not deep inside a traced call.
            require_jax_finufft()
        if frequency_grid is not None:
            frequency_grid = jnp.asarray(frequency_grid)
            if frequency_grid.shape != shape + (3,):
                raise ValueError(
                    f"FFTAtomRenderFn: frequency_grid must have shape {shape + (3,)}; got "
                    f"{frequency_grid.shape}"
                )
        self.shape = shape
        self.voxel_size = jnp.asarray(voxel_size, dtype=float)
        self.frequency_grid = frequency_grid
        self.sampling_mode = sampling_mode
        self.eps = float(eps)
        # Static fields must hash: a dict of options is kept as sorted items.
        self.opts = tuple(sorted(opts.items())) if isinstance(opts, dict) else opts
        self.backend = backend

    def _evaluators(self, factors, dtype):
        """`(evaluate(factor) -> grid of f(xi), box_sinc grid)` on the centred grid."""
        frequencies = None if self.frequency_grid is None else self.frequency_grid.astype(dtype)
        modes = [np.arange(-(n // 2), (n + 1) // 2) for n in self.shape]
        return self._evaluators_on(factors, dtype, modes, frequencies)

    def _evaluators_on(self, factors, dtype, modes, frequencies):
        """`(evaluate, box_sinc)` on the grid of integer `modes` per axis (z, y, x), or on
        the given `frequencies` grid (A^-1) where there is one."""
        voxel_size = self.voxel_size.astype(dtype)
        if frequencies is not None:
            return (lambda factor: factor(frequencies)), FourierSinc(voxel_size)(frequencies)
        # Frequencies per axis, in cycles per voxel then A^-1.
        axes = [jnp.asarray(m / n, dtype) / voxel_size for m, n in zip(modes, self.shape)]
        expand = [(slice(None), None, None), (None, slice(None), None), (None, None, slice(None))]
        # The voxel's sinc is separable: three 1D profiles, not three sincs per voxel.
        box_sinc = (
            jnp.sinc(axes[0] * voxel_size)[expand[0]]
            * jnp.sinc(axes[1] * voxel_size)[expand[1]]
            * jnp.sinc(axes[2] * voxel_size)[expand[2]]
        )
        if not all(isinstance(f, AbstractRadialFourierOperator) for f in factors):
            grid = jnp.stack(jnp.meshgrid(*axes, indexing="ij")[::-1], axis=-1)
            return (lambda factor: factor(grid)), box_sinc
        if len(set(self.shape)) == 1:
            # A cubic box has few distinct |xi|^2 = (mx^2 + my^2 + mz^2) / L^2: evaluate
            # each radial factor once per shell, then gather.
            n = self.shape[0]
            squares = [jnp.asarray(m * m, jnp.int32)[e] for m, e in zip(modes, expand)]
            shells = squares[0] + squares[1] + squares[2]
            table = jnp.arange(3 * (n // 2) ** 2 + 1, dtype=dtype) / (n * voxel_size) ** 2
            return (lambda factor: factor.evaluate_squared_magnitude(table)[shells]), box_sinc
        xi2 = sum((a * a)[e] for a, e in zip(axes, expand))
        return (lambda factor: factor.evaluate_squared_magnitude(xi2)), box_sinc

    def fourier_coefficients(
        self, volume_representation: IndependentAtomVolume
    ) -> Inexact[Array, "nz ny nx"]:
        """The Fourier series coefficients `S(xi) sum_types f(xi) sum_n exp(2 pi i xi.r_n)`.

        Centred (zero frequency at index `n // 2` of each axis), in A (before the
        division by the box volume).
        """
        volume = _check(volume_representation)
        return _coefficients(self, volume, _backends(self.backend, volume))

    def _coefficients(self, volume: IndependentAtomVolume, backends: tuple[str, ...]):
        positions = jax.tree.leaves(volume.positions)
        factors = jax.tree.leaves(volume.scattering_factors, is_leaf=_is_operator)
        dtype = jnp.result_type(*positions, jnp.float32) if positions else jnp.float32
        complex_dtype = jnp.result_type(dtype, jnp.complex64)
        evaluate, box_sinc = self._evaluators(factors, dtype)
        voxel_size = self.voxel_size.astype(dtype)
        box_zyx = jnp.asarray(self.shape, dtype) * voxel_size
        coefficients = jnp.zeros(self.shape, complex_dtype)
        for atoms, factor, backend in zip(positions, factors, backends):
            if atoms.shape[0] == 0:
                continue
            # exp(2 pi i xi.r) with xi_j = m_j / L_j: NUFFT points 2 pi r_j / L_j, iflag +1.
            points = 2.0 * np.pi * atoms[:, ::-1].astype(dtype) / box_zyx
            sums = nufft_type1(
                self.shape,
                jnp.ones(atoms.shape[0], complex_dtype),
                points,
                iflag=1,
                eps=self.eps,
                backend=backend,
                opts=self.opts,
            )
            coefficients = coefficients + evaluate(factor).astype(dtype) * sums
        if self.sampling_mode == "average":
            coefficients = coefficients * box_sinc.astype(dtype)
        return coefficients

    def __call__(
        self,
        volume_representation: IndependentAtomVolume,
        *,
        outputs_real_space: bool = True,
        outputs_rfft: bool = False,
        fftshifted: bool = False,
    ) -> Inexact[Array, "nz ny nx"]:
        """Render the volume; see `AbstractVolumeRenderFn.__call__` for the arguments."""
        volume = _check(volume_representation)
        return _render(
            self, volume, _backends(self.backend, volume), outputs_real_space, outputs_rfft, fftshifted
        )

    def _half_evaluators(self, factors, dtype):
        """`_evaluators` on the rfft half-grid (zero frequency first, last axis
        `0 .. n // 2`), the layout of `nufft_type1_real_jax`."""
        last = self.shape[2] // 2 + 1
        frequencies = None
        if self.frequency_grid is not None:
            frequencies = jnp.fft.ifftshift(self.frequency_grid.astype(dtype), axes=(0, 1, 2))
            frequencies = frequencies[:, :, :last]
        # Modes in FFT order; only their squares and the even sinc matter, so the Nyquist
        # sign does not.
        modes = [np.rint(np.fft.fftfreq(n, 1.0 / n)).astype(np.int64) for n in self.shape[:2]]
        return self._evaluators_on(factors, dtype, modes + [np.arange(last)], frequencies)

    def _render_real_nufft(self, volume: IndependentAtomVolume):
        """The JAX engine's route: every atom type's sums in one real-grid NUFFT (one
        scatter, one batched rfft), weighted by its factor and summed on the half
        spectrum, then one inverse rfft: real arithmetic throughout."""
        pairs = [
            (p, f)
            for p, f in zip(
                jax.tree.leaves(volume.positions),
                jax.tree.leaves(volume.scattering_factors, is_leaf=_is_operator),
            )
            if p.shape[0] > 0
        ]
        dtype = jnp.result_type(*[p for p, _ in pairs], jnp.float32) if pairs else jnp.float32
        voxel_size = self.voxel_size.astype(dtype)
        if not pairs:
            return jnp.zeros(self.shape, dtype)
        evaluate, box_sinc = self._half_evaluators([f for _, f in pairs], dtype)
        box_zyx = jnp.asarray(self.shape, dtype) * voxel_size
        # exp(-2 pi i xi.(r + c)) with xi_j = m_j / L_j, c_j = (n_j // 2) dr: the shift
        # by c puts voxel n // 2 at the origin, so the inverse rfft comes out centred.
        centre = jnp.asarray([n // 2 for n in self.shape], dtype) * voxel_size
        atoms = jnp.concatenate([p[:, ::-1].astype(dtype) for p, _ in pairs])
        points = 2.0 * np.pi * (atoms + centre) / box_zyx
        upsampfac = upsampfac_from(self.opts)
        sums = nufft_type1_real_jax(
            self.shape,
            points,
            tuple(p.shape[0] for p, _ in pairs),
            iflag=-1,
            eps=self.eps,
            upsampfac=upsampfac,
        )
        weights = jnp.stack([evaluate(f).astype(dtype) for _, f in pairs])
        if self.sampling_mode == "average":
            weights = weights * box_sinc.astype(dtype)
        spectrum = jnp.sum(weights * sums, axis=0)
        # U_l = 1/V sum_m c_m exp(-2 pi i m.(l - n//2) / n) = irfftn * N / V, N / V = dr^-3.
        return jnp.fft.irfftn(spectrum, s=self.shape) / voxel_size**3

    def _render(self, volume, backends, outputs_real_space, outputs_rfft, fftshifted):
        if all(b == "jax" for b in backends):
            real = self._render_real_nufft(volume)
            return real_to_requested_space(real, outputs_real_space, outputs_rfft, fftshifted)
        coefficients = self._coefficients(volume, backends)
        dtype = coefficients.real.dtype
        box_volume = math.prod(self.shape) * self.voxel_size.astype(dtype) ** 3
        # U_l = sum_m c_m exp(-2 pi i m (l - n//2) / n) / V: an fftn of the coefficients
        # put corner-first, read back centre-first. The real part symmetrizes the
        # unpaired Nyquist planes of even axes.
        real = jnp.fft.fftshift(jnp.fft.fftn(jnp.fft.ifftshift(coefficients))).real / box_volume
        return real_to_requested_space(real, outputs_real_space, outputs_rfft, fftshifted)


# Module-level, not methods: an equinox method is bound anew on each access, which
# costs more than the rest of a call's host work.
def _check(volume) -> IndependentAtomVolume:
    if not isinstance(volume, IndependentAtomVolume):
        raise TypeError(
            f"FFTAtomRenderFn renders an IndependentAtomVolume; got {type(volume).__name__}"
        )
    return volume


def _backends(backend: str, volume: IndependentAtomVolume) -> tuple[str, ...]:
    """The engine of each atom type, from the device its positions live on."""
    return tuple(resolve_backend(backend, array_platform(p)) for p in jax.tree.leaves(volume.positions))


# Compiled once per grid, options and atom-type layout: eager op-by-op dispatch of the
# per-type NUFFTs and operator evaluations costs several times the arithmetic on a CPU.
# `jax.jit` rather than `eqx.filter_jit`: every leaf of a renderer and of an
# IndependentAtomVolume is an array, and jit's C++ dispatch costs a fraction of
# filter_jit's Python one, which is a large share of a millisecond render.
@functools.partial(jax.jit, static_argnums=(2,))
def _coefficients(render_fn: FFTAtomRenderFn, volume, backends):
    return render_fn._coefficients(volume, backends)


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5))
def _render(render_fn: FFTAtomRenderFn, volume, backends, *flags):
    return render_fn._render(volume, backends, *flags)
