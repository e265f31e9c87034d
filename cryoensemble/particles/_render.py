"""One batch of particle images, on the worker's device."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..constants import PengScatteringFactorParameters
from ..ndimage import FourierGaussian
from ..simulator import (
    AstigmaticCTF,
    ContrastTransferTheory,
    GaussianMixtureImageModel,
    GaussianMixtureVolume,
    QuaternionPose,
    add_white_noise,
)
from ..sources import AbstractEnsembleSource, ParametrizationSource


# The per-particle CTF labels, in the order the batch function reads them.
CTF_LABELS = ("defocus_u", "defocus_v", "defocus_angle", "phase_shift", "ctf_b_factor",
              "spherical_aberration", "amplitude_contrast")


@dataclasses.dataclass(frozen=True)
class ImageSpec:
    """What every image of a dataset shares (hashable, sent to the workers)."""

    shape: tuple[int, int]
    pixel_size: float
    voltage_in_kilovolts: float
    uses_ctf: bool
    snr: float | None
    dtype: str
    images_per_chunk: int
    images_per_step: int | None  # None: the worker's choice (64 on GPUs, 1 on CPUs)
    centre: tuple[float, float, float] = (0.0, 0.0, 0.0)
    extra_b_factor: float = 0.0
    truncation: float = 1e-6


def image_model(source: AbstractEnsembleSource, spec: ImageSpec) -> GaussianMixtureImageModel:
    """The image model of the source's atoms (Peng parameters, or a parametrization's
    own mixture)."""
    if isinstance(source, ParametrizationSource):
        amplitudes, variances = source.mixture()
        variances = np.asarray(variances) + spec.extra_b_factor / (8 * np.pi**2)
    else:
        volume = GaussianMixtureVolume.from_tabulated_parameters(
            np.zeros((source.n_atoms, 3), np.float32),
            PengScatteringFactorParameters(source.atomic_numbers),
            spec.extra_b_factor or None,
        )
        amplitudes, variances = volume.amplitudes, volume.variances
    return GaussianMixtureImageModel(
        jnp.asarray(amplitudes, jnp.float32), jnp.asarray(variances, jnp.float32),
        spec.shape, spec.pixel_size, spec.voltage_in_kilovolts, truncation=spec.truncation,
    )


def read_conformations(source: AbstractEnsembleSource, indices: np.ndarray) -> np.ndarray:
    """Positions of the given sorted, distinct conformations, each contiguous run read
    once."""
    breaks = np.flatnonzero(np.diff(indices) != 1) + 1
    return np.concatenate(
        [source.read(int(run[0]), int(run[-1]) + 1) for run in np.split(indices, breaks)]
    )


@eqx.filter_jit
def _simulate(model, positions, index, quaternions, shifts, ctf, seeds, snr, step: int):
    def one(particle):
        i, q, shift, ctf_row, seed = particle
        rotation = QuaternionPose(wxyz=q).rotation_matrix.astype(positions.dtype)
        theory = None
        if ctf is not None:
            du, dv, angle, phase_shift, b_factor, cs, ac = (ctf_row[j] for j in range(7))
            theory = ContrastTransferTheory(
                # RELION's defocus angle (from x) in cryojax's convention (from y).
                AstigmaticCTF((du + dv) / 2, du - dv, -angle - 90.0, cs),
                FourierGaussian(b_factor=b_factor), ac, phase_shift,
            )
        image = model(positions[i], rotation, shift, theory)
        if snr is None:
            return image, jnp.zeros((), image.dtype)
        return add_white_noise(image, snr, jax.random.key(seed))

    rows = ctf if ctf is not None else jnp.zeros((index.shape[0], 7), positions.dtype)
    return jax.lax.map(one, (index, quaternions, shifts, rows, seeds), batch_size=step)


def images_per_step(spec: ImageSpec) -> int:
    """Particles vectorized together: on GPUs enough to fill the device; on CPUs one at a
    time (XLA's CPU scatter of a vectorized batch is slower per image)."""
    if spec.images_per_step is not None:
        return spec.images_per_step
    return 64 if jax.default_backend() == "gpu" else 1


def render_batch(source: AbstractEnsembleSource, spec: ImageSpec, labels: dict) -> tuple:
    """Images `(n, ny, nx)` (spec.dtype) and noise sigmas `(n,)` of the particles whose
    labels are given (arrays of one chunk)."""
    n = len(labels["conformation"])
    size = spec.images_per_chunk
    unique, inverse = np.unique(labels["conformation"], return_inverse=True)
    positions = read_conformations(source, unique) - np.asarray(spec.centre, np.float32)
    # Fixed shapes, one compilation: pad conformations and particles to the chunk size.
    slots = min(size, len(source))
    positions = np.concatenate(
        [positions, np.zeros((slots - len(unique),) + positions.shape[1:], positions.dtype)])

    def padded(array):
        array = np.asarray(array)
        return np.concatenate([array, np.repeat(array[:1], size - n, axis=0)]) if n < size else array

    ctf = (np.stack([labels[k] for k in CTF_LABELS], axis=1).astype(np.float32)
           if spec.uses_ctf else None)
    images, sigmas = _simulate(
        image_model(source, spec),
        jnp.asarray(positions, jnp.float32),
        jnp.asarray(padded(inverse.astype(np.int32))),
        jnp.asarray(padded(labels["quaternion"]), jnp.float32),
        jnp.asarray(padded(np.stack([labels["shift_x"], labels["shift_y"]], 1)), jnp.float32),
        None if ctf is None else jnp.asarray(padded(ctf)),
        jnp.asarray(padded(labels["noise_seed"])),
        spec.snr,
        images_per_step(spec),
    )
    images = np.asarray(images[:n].astype(spec.dtype))
    return images, np.asarray(sigmas[:n], np.float64)
