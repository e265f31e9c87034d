"""Volumes, poses, renderers and projections (pure JAX + equinox)."""

from ._image_simulation import (
    GaussianMixtureImageModel as GaussianMixtureImageModel,
    add_white_noise as add_white_noise,
    phase_contrast_image as phase_contrast_image,
    project_gaussian_mixture as project_gaussian_mixture,
    projection_window as projection_window,
)
from ._transfer_theory import (
    AbstractCTF as AbstractCTF,
    AstigmaticCTF as AstigmaticCTF,
    ContrastTransferTheory as ContrastTransferTheory,
)
from .auto_render import AutoVolumeRenderFn as AutoVolumeRenderFn
from .fft_atom_render import FFTAtomRenderFn as FFTAtomRenderFn
from .gaussian_mixture_render import GaussianMixtureRenderFn as GaussianMixtureRenderFn
from .gaussian_mixture_volume import GaussianMixtureVolume as GaussianMixtureVolume
from .independent_atom_volume import (
    IndependentAtomVolume as IndependentAtomVolume,
    split_atoms_by_element as split_atoms_by_element,
)
from .pose import (
    AbstractPose as AbstractPose,
    AxisAnglePose as AxisAnglePose,
    EulerAnglePose as EulerAnglePose,
    QuaternionPose as QuaternionPose,
)
from .projection import (
    AbstractVolumeIntegrator as AbstractVolumeIntegrator,
    FourierSliceExtraction as FourierSliceExtraction,
    GaussianMixtureProjection as GaussianMixtureProjection,
    RealVoxelProjection as RealVoxelProjection,
)
from .render_base import AbstractVolumeRenderFn as AbstractVolumeRenderFn
from .volume_base import (
    AbstractAtomVolume as AbstractAtomVolume,
    AbstractVolumeParametrization as AbstractVolumeParametrization,
    AbstractVolumeRepresentation as AbstractVolumeRepresentation,
)
from .voxel_volumes import (
    AbstractVoxelVolume as AbstractVoxelVolume,
    FourierVoxelGridVolume as FourierVoxelGridVolume,
    FourierVoxelSplineVolume as FourierVoxelSplineVolume,
    RealVoxelGridVolume as RealVoxelGridVolume,
)


# cryojax 0.5's name of the same CTF.
AberratedAstigmaticCTF = AstigmaticCTF

__all__ = [
    "AbstractCTF",
    "AberratedAstigmaticCTF",
    "AstigmaticCTF",
    "ContrastTransferTheory",
    "GaussianMixtureImageModel",
    "add_white_noise",
    "phase_contrast_image",
    "project_gaussian_mixture",
    "projection_window",
    "AbstractAtomVolume",
    "AbstractPose",
    "AbstractVolumeIntegrator",
    "AbstractVolumeParametrization",
    "AbstractVolumeRenderFn",
    "AbstractVolumeRepresentation",
    "AbstractVoxelVolume",
    "AutoVolumeRenderFn",
    "AxisAnglePose",
    "EulerAnglePose",
    "FFTAtomRenderFn",
    "FourierSliceExtraction",
    "FourierVoxelGridVolume",
    "FourierVoxelSplineVolume",
    "GaussianMixtureProjection",
    "GaussianMixtureRenderFn",
    "GaussianMixtureVolume",
    "IndependentAtomVolume",
    "QuaternionPose",
    "RealVoxelGridVolume",
    "RealVoxelProjection",
    "split_atoms_by_element",
]
