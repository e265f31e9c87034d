"""The rendering interface: a representation in, a voxel grid out."""

from abc import abstractmethod

import equinox as eqx
from jaxtyping import Array, Inexact

from ...ndimage.fft import fftn, fftshift_spectrum, rfftn
from .._volume.base_volume import AbstractVolumeRepresentation


class AbstractVolumeRenderFn(eqx.Module):
    """Renders a volume representation onto a voxel grid (potential in A^-2).

    Grids are indexed [z, y, x]; voxel i of an axis of length n sits at
    (i - n // 2) * voxel_size.
    """

    shape: eqx.AbstractVar[tuple[int, int, int]]

    @abstractmethod
    def __call__(
        self,
        volume_representation: AbstractVolumeRepresentation,
        *,
        outputs_real_space: bool = True,
        outputs_rfft: bool = False,
        fftshifted: bool = False,
    ) -> Inexact[Array, "nz ny nx"]:
        """Render the volume.

        **Arguments:**

        - `volume_representation`: the volume to render.
        - `outputs_real_space`: if `True`, return the real-space voxel grid.
        - `outputs_rfft`: if `True` (and not real space), return the `rfftn` of the grid;
          otherwise its `fftn`.
        - `fftshifted`: if `True` (and not real space), put the zero frequency in the
          centre of the Fourier grid; otherwise it is in the corner.
        """


def real_to_requested_space(
    real_volume: Array, outputs_real_space: bool, outputs_rfft: bool, fftshifted: bool
) -> Array:
    """Return a real-space grid as the caller asked: real, rfft or fft, shifted or not."""
    if outputs_real_space:
        return real_volume
    spectrum = rfftn(real_volume) if outputs_rfft else fftn(real_volume)
    return fftshift_spectrum(spectrum, outputs_rfft) if fftshifted else spectrum
