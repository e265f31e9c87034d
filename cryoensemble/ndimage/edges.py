"""Padding and cropping about the centre voxel.

Voxel `n // 2` of an axis is the origin (cryojax convention); padding from `n` to `m` or
cropping from `m` to `n` keeps it the origin, i.e. voxel `n // 2` becomes voxel `m // 2`.
"""

import jax
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


def crop_to_shape(array: Array, shape: tuple[int, ...], center=None) -> Array:
    """Crop the trailing axes of `array` to `shape`, keeping the origin voxel the origin.

    **Arguments:**

    - `array`: the array; its last `len(shape)` axes are cropped.
    - `shape`: the cropped shape, each entry at most the array's.
    - `center`: crop about this index instead, given as (x, y[, z]) (cryojax's order):
      python ints crop by slicing (a window that leaves the array is an error), JAX
      arrays by `jax.lax.dynamic_slice` (traceable; the window is clamped inside).
    """
    shape = tuple(int(s) for s in shape)
    current = array.shape[-len(shape) :]
    if any(m > n for n, m in zip(current, shape)):
        raise ValueError(f"crop_to_shape: cannot crop shape {current} to the larger {shape}")
    if center is None:
        starts = _offsets(shape, current)
    else:
        center = tuple(center)[::-1]
        if len(center) != len(shape):
            raise ValueError(
                f"crop_to_shape: center has {len(center)} entries for a {len(shape)}D crop"
            )
        if any(isinstance(c, jax.Array) for c in center):
            lead = array.ndim - len(shape)
            starts = [jnp.asarray(0)] * lead + [jnp.asarray(c) - m // 2 for c, m in zip(center, shape)]
            return jax.lax.dynamic_slice(array, starts, array.shape[:lead] + shape)
        starts = [int(c) - m // 2 for c, m in zip(center, shape)]
        if any(s < 0 or s + m > n for s, m, n in zip(starts, shape, current)):
            raise ValueError(
                f"crop_to_shape: a {shape} window about {tuple(center)[::-1]} leaves the "
                f"array of shape {current}"
            )
    index = (Ellipsis,) + tuple(slice(s, s + m) for s, m in zip(starts, shape))
    return array[index]


def resize_with_crop_or_pad(array: Array, shape: tuple[int, ...], mode: str = "constant") -> Array:
    """Crop or pad each of the trailing axes of `array` to `shape`, about the origin voxel."""
    shape = tuple(int(s) for s in shape)
    current = array.shape[-len(shape) :]
    cropped = crop_to_shape(array, tuple(min(n, m) for n, m in zip(current, shape)))
    return pad_to_shape(cropped, shape, mode=mode)
