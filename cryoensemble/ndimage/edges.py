"""Padding and cropping about the centre voxel.

Voxel `n // 2` of an axis is the origin (cryojax convention); padding from `n` to `m` or
cropping from `m` to `n` keeps it the origin, i.e. voxel `n // 2` becomes voxel `m // 2`.
"""

import jax.numpy as jnp
from jaxtyping import Array


def _offsets(small: tuple[int, ...], large: tuple[int, ...]) -> list[int]:
    return [m // 2 - n // 2 for n, m in zip(small, large)]


def pad_to_shape(array: Array, shape: tuple[int, ...], mode: str = "constant", **kwargs) -> Array:
    """Pad the trailing axes of `array` to `shape`, keeping the origin voxel the origin.

    **Arguments:**

    - `array`: the array; its last `len(shape)` axes are padded.
    - `shape`: the padded shape, each entry at least the array's.
    - `mode`, `kwargs`: as for `jax.numpy.pad`.
    """
    shape = tuple(int(s) for s in shape)
    current = array.shape[-len(shape) :]
    if any(m < n for n, m in zip(current, shape)):
        raise ValueError(f"pad_to_shape: cannot pad shape {current} to the smaller {shape}")
    before = _offsets(current, shape)
    widths = [(0, 0)] * (array.ndim - len(shape)) + [
        (b, m - n - b) for b, n, m in zip(before, current, shape)
    ]
    return jnp.pad(array, widths, mode=mode, **kwargs)


def crop_to_shape(array: Array, shape: tuple[int, ...]) -> Array:
    """Crop the trailing axes of `array` to `shape`, keeping the origin voxel the origin."""
    shape = tuple(int(s) for s in shape)
    current = array.shape[-len(shape) :]
    if any(m > n for n, m in zip(current, shape)):
        raise ValueError(f"crop_to_shape: cannot crop shape {current} to the larger {shape}")
    starts = _offsets(shape, current)
    index = (Ellipsis,) + tuple(slice(s, s + m) for s, m in zip(starts, shape))
    return array[index]


def resize_with_crop_or_pad(array: Array, shape: tuple[int, ...], mode: str = "constant") -> Array:
    """Crop or pad each of the trailing axes of `array` to `shape`, about the origin voxel."""
    shape = tuple(int(s) for s in shape)
    current = array.shape[-len(shape) :]
    cropped = crop_to_shape(array, tuple(min(n, m) for n, m in zip(current, shape)))
    return pad_to_shape(cropped, shape, mode=mode)
