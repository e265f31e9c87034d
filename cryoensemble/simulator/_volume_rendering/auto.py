"""AutoVolumeRenderFn: the renderer chosen from the volume representation."""

from typing import Any

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, Inexact

from .fft_atom import FFTAtomRenderFn
from .gaussian_mixture import GaussianMixtureRenderFn
from .._volume.gaussian_mixture import GaussianMixtureVolume
from .._volume.independent_atom import IndependentAtomVolume
from .base_rendering import AbstractVolumeRenderFn
from .._volume.base_volume import AbstractVolumeRepresentation


# Representation -> renderer, most specific first.
_RENDERERS: tuple[tuple[type, type], ...] = (
    (GaussianMixtureVolume, GaussianMixtureRenderFn),
    (IndependentAtomVolume, FFTAtomRenderFn),
)


class AutoVolumeRenderFn(AbstractVolumeRenderFn):
    """Render any representation that has a default renderer.

    | Volume representation   | Rendering function        |
    | :---------------------- | :------------------------ |
    | `GaussianMixtureVolume` | `GaussianMixtureRenderFn` |
    | `IndependentAtomVolume` | `FFTAtomRenderFn`         |

    `options` are passed as keyword arguments to the chosen renderer, e.g.
    `{"batch_options": {"n_batches": 4}}` or `{"eps": 1e-8, "backend": "jax"}`.
    """

    shape: tuple[int, int, int] = eqx.field(static=True)
    voxel_size: Float[Array, ""]
    options: dict[str, Any] = eqx.field(static=True)

    def __init__(self, shape: tuple[int, int, int], voxel_size, options: dict[str, Any] = {}):
        """**Arguments:**

        - `shape`: the grid shape (nz, ny, nx).
        - `voxel_size`: the voxel size in A.
        - `options`: keyword arguments of the resolved renderer, e.g.
          `GaussianMixtureRenderFn(shape, voxel_size, **options)`.
        """
        self.shape = tuple(int(s) for s in shape)
        self.voxel_size = jnp.asarray(voxel_size, dtype=float)
        self.options = dict(options)

    def select_render_fn(self, volume_representation: AbstractVolumeRepresentation) -> AbstractVolumeRenderFn:
        """The renderer for `volume_representation`, built with `options`."""
        for representation, render_cls in _RENDERERS:
            if isinstance(volume_representation, representation):
                return render_cls(self.shape, self.voxel_size, **self.options)
        supported = ", ".join(r.__name__ for r, _ in _RENDERERS)
        raise TypeError(
            f"AutoVolumeRenderFn cannot render a {type(volume_representation).__name__}: it "
            f"renders {supported}. Pass a custom representation to its own rendering "
            "function (voxel volumes are imaged with FourierSliceExtraction or "
            "RealVoxelProjection)."
        )

    def __call__(
        self,
        volume_representation: AbstractVolumeRepresentation,
        *,
        outputs_real_space: bool = True,
        outputs_rfft: bool = False,
        fftshifted: bool = False,
    ) -> Inexact[Array, "nz ny nx"]:
        """Render with the selected renderer; see `AbstractVolumeRenderFn.__call__`."""
        render_fn = self.select_render_fn(volume_representation)
        return render_fn(
            volume_representation,
            outputs_real_space=outputs_real_space,
            outputs_rfft=outputs_rfft,
            fftshifted=fftshifted,
        )
