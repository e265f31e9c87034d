"""Full and half (real-input) spectra, converted into each other.

A real array's `fftn` is Hermitian, `F[-k] = conj(F[k])`, so `rfftn` keeps only the
non-negative frequencies of the last axis (`n // 2 + 1` of them). Both spectra here have
the zero frequency in the corner, as `fftn` and `rfftn` return them.
"""

import jax.numpy as jnp
from jaxtyping import Array, Complex


def convert_fftn_to_rfftn(fftn_array: Complex[Array, "... n"]) -> Complex[Array, "... n//2+1"]:
    """The `rfftn` of a real array from its `fftn`: the last axis' first `n // 2 + 1` entries.

    **Arguments:**

    - `fftn_array`: a full spectrum, zero frequency in the corner.
    """
    fftn_array = jnp.asarray(fftn_array)
    return fftn_array[..., : fftn_array.shape[-1] // 2 + 1]


def convert_rfftn_to_fftn(
    rfftn_array: Complex[Array, "... n//2+1"], shape: tuple[int, ...]
) -> Complex[Array, "..."]:
    """The full `fftn` of a real array from its `rfftn`, by Hermitian symmetry.

    **Arguments:**

    - `rfftn_array`: a half spectrum, zero frequency in the corner, transformed over its
      last `len(shape)` axes.
    - `shape`: the real-space shape of those axes (the last one is ambiguous otherwise).
    """
    rfftn_array = jnp.asarray(rfftn_array)
    shape = tuple(int(s) for s in shape)
    ndim = len(shape)
    n = shape[-1]
    if rfftn_array.shape[-ndim:] != shape[:-1] + (n // 2 + 1,):
        raise ValueError(
            f"convert_rfftn_to_fftn: an rfftn of real shape {shape} has shape "
            f"{shape[:-1] + (n // 2 + 1,)}; got {rfftn_array.shape[-ndim:]}"
        )
    # F[k] = conj(F[-k]): the missing k_last = n//2+1..n-1 are the conjugates of the
    # mirrored entries (every axis reversed about its zero frequency).
    axes = tuple(range(rfftn_array.ndim - ndim, rfftn_array.ndim))
    mirrored = jnp.conj(rfftn_array)
    for axis in axes[:-1]:
        mirrored = jnp.roll(jnp.flip(mirrored, axis=axis), 1, axis=axis)
    missing = jnp.flip(mirrored[..., 1 : n - n // 2], axis=-1)
    return jnp.concatenate([rfftn_array, missing], axis=-1)
