"""Images of stored volumes: a potential store's conformations by Fourier slice."""

import hashlib

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import zarr

from ..errors import CryoEnsembleError
from ..ndimage import FourierGaussian
from ..simulator import (
    AstigmaticCTF,
    BasicImageConfig,
    ContrastTransferTheory,
    FourierSliceExtraction,
    FourierVoxelGridVolume,
    FourierVoxelSplineVolume,
    QuaternionPose,
    add_white_noise,
    phase_contrast_image,
)
from ._render import images_per_step


class PotentialStoreError(CryoEnsembleError, ValueError):
    """A potential store whose volumes cannot be imaged as asked."""


PROJECTIONS = ("fourier-linear", "fourier-spline")


class StoredVolumes:
    """The conformations of a potential store (`cryoensemble render` output, plain zarr
    v3: `potential (conformation, z, y, x)` in A^-2 with `x` in A), read by index.

    **Arguments:**

    - `store`: a path, URL or `cryoensemble.store.StoreLocation`.
    - `storage_options`: fsspec options of a URL.
    """

    def __init__(self, store, storage_options=None):
        from .. import store as store_module

        self.location = store_module.as_location(store, storage_options)
        self.path = self.location.url
        parameters = store_module.read_parameters(self.location)
        if parameters is None or "n_conformations" not in parameters:
            raise PotentialStoreError(f"{self.path}: not a potential store (made by render)")
        layout = store_module.layout_from_parameters(parameters)
        if len(set(layout.shape)) != 1:
            raise PotentialStoreError(
                f"{self.path}: imaging needs cubic volumes; `potential` is {layout.shape}")
        if not store_module.done_conformations(self.location, layout).all():
            raise PotentialStoreError(f"{self.path}: not every conformation is rendered yet")
        dataset = store_module.open_store(self.location)
        x = np.asarray(dataset["x"].values, np.float64)
        self.voxel_size = float(np.median(np.diff(x)))
        self.shape = tuple(int(n) for n in layout.shape)
        self.n_conformations = layout.n_conformations
        self._labels = {name: np.asarray(values) for name, values in dataset.coords.items()
                        if values.dims == ("conformation",) and name != "conformation"}

    def __len__(self) -> int:
        return self.n_conformations

    def labels(self) -> dict[str, np.ndarray]:
        """Per-conformation labels of the store (frame, weight, ...)."""
        return dict(self._labels)

    def read(self, index: int) -> np.ndarray:
        """One conformation's volume, [z, y, x], float32."""
        from ..store import POTENTIAL

        array = zarr.open_array(self.location.zarr_store(read_only=True), path=POTENTIAL, mode="r")
        return np.asarray(array[index], np.float32)

    def description(self) -> dict:
        from ..store import POTENTIAL

        digest = hashlib.sha256(self.location.get(f"{POTENTIAL}/zarr.json") or b"").hexdigest()
        return {"kind": "potential-store", "path": self.path, "shape": list(self.shape),
                "n": self.n_conformations, "potential_metadata_sha256": digest}


@eqx.filter_jit
def _images_of_volume(volume, integrator, image_config, quaternions, shifts, ctf, seeds, snr, pixel_size,
                      voltage, step: int):
    def one(particle):
        q, shift, ctf_row, seed = particle
        rotated = volume.rotate_to_pose(QuaternionPose(wxyz=q))
        projection = integrator.integrate(rotated, image_config, outputs_real_space=True)
        theory = None
        if ctf is not None:
            du, dv, angle, phase_shift, b_factor, cs, ac = (ctf_row[j] for j in range(7))
            theory = ContrastTransferTheory(
                AstigmaticCTF((du + dv) / 2, du - dv, -angle - 90.0, cs),
                FourierGaussian(b_factor=b_factor), ac, phase_shift)
        image = phase_contrast_image(projection, pixel_size, voltage, theory, shift)
        if snr is None:
            return image, jnp.zeros((), image.dtype)
        return add_white_noise(image, snr, jax.random.key(seed))

    rows = ctf if ctf is not None else jnp.zeros((quaternions.shape[0], 7), jnp.float32)
    return jax.lax.map(one, (quaternions, shifts, rows, seeds), batch_size=step)


def render_volume_batch(volumes: StoredVolumes, spec, projection: str, labels: dict, ctf_labels):
    """Images and noise sigmas of one chunk of particles, conformation by conformation:
    each volume is transformed once (padded twice) and sliced for its particles."""
    n = len(labels["conformation"])
    images = np.empty((n,) + spec.shape, spec.dtype)
    sigmas = np.empty(n, np.float64)
    integrator = FourierSliceExtraction()
    # The volume's voxels are the image's pixels; the padded slice is cropped to the box.
    image_config = BasicImageConfig(spec.shape, volumes.voxel_size, spec.voltage_in_kilovolts)
    for conformation in np.unique(labels["conformation"]):
        rows = np.flatnonzero(labels["conformation"] == conformation)
        grid = jnp.asarray(volumes.read(int(conformation)))
        volume = (FourierVoxelSplineVolume.from_real_voxel_grid(grid, pad_scale=2.0)
                  if projection == "fourier-spline"
                  else FourierVoxelGridVolume.from_real_voxel_grid(grid, pad_scale=2.0,
                                                                   sinc_correction=True))
        # Pad to a power of two: a few compilations, not one per count.
        size = 1 << int(np.ceil(np.log2(len(rows))))
        take = np.concatenate([rows, np.repeat(rows[:1], size - len(rows))])
        ctf = (None if not spec.uses_ctf else
               jnp.asarray(np.stack([labels[k][take] for k in ctf_labels], 1), jnp.float32))
        out, sigma = _images_of_volume(
            volume, integrator, image_config, jnp.asarray(labels["quaternion"][take], jnp.float32),
            jnp.asarray(np.stack([labels["shift_x"][take], labels["shift_y"][take]], 1), jnp.float32),
            ctf, jnp.asarray(labels["noise_seed"][take]), spec.snr, spec.pixel_size,
            spec.voltage_in_kilovolts, min(images_per_step(spec), size))
        images[rows] = np.asarray(out[: len(rows)]).astype(spec.dtype)
        sigmas[rows] = np.asarray(sigma[: len(rows)])
    return images, sigmas
