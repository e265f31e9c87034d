"""Volumes, poses, renderers and projections (pure JAX + equinox), in cryojax's API."""

from ..atom_util import split_atoms_by_element as split_atoms_by_element
from ..ndimage.scattering_factors import (
    LobatoScatteringFactor as LobatoScatteringFactor,
    PengScatteringFactor as PengScatteringFactor,
)
from .api import (
    load_tabulated_volume as load_tabulated_volume,
    render_voxel_volume as render_voxel_volume,
)
from .auto_render import AutoVolumeRenderFn as AutoVolumeRenderFn
from .fft_atom_render import FFTAtomRenderFn as FFTAtomRenderFn
from .gaussian_mixture_render import GaussianMixtureRenderFn as GaussianMixtureRenderFn
from .gaussian_mixture_volume import GaussianMixtureVolume as GaussianMixtureVolume
from .image_config import (
    AbstractImageConfig as AbstractImageConfig,
    BasicImageConfig as BasicImageConfig,
)
from .independent_atom_volume import IndependentAtomVolume as IndependentAtomVolume
from .perturbed_volume import PositionJitteredVolume as PositionJitteredVolume
from .pose import (
    SO3 as SO3,
    AbstractPose as AbstractPose,
    AxisAnglePose as AxisAnglePose,
    EulerAnglePose as EulerAnglePose,
    QuaternionPose as QuaternionPose,
)
from .projection import (
    AbstractVolumeIntegrator as AbstractVolumeIntegrator,
    AutoVolumeProjection as AutoVolumeProjection,
    FFTAtomProjection as FFTAtomProjection,
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
    RealVoxelCloudVolume as RealVoxelCloudVolume,
    RealVoxelGridVolume as RealVoxelGridVolume,
)


# cryojax 0.6's name of the same class.
GaussianFourierVolume = IndependentAtomVolume


__all__ = [
    "SO3",
    "AbstractAtomVolume",
    "AbstractImageConfig",
    "AbstractPose",
    "AbstractVolumeIntegrator",
    "AbstractVolumeParametrization",
    "AbstractVolumeRenderFn",
    "AbstractVolumeRepresentation",
    "AbstractVoxelVolume",
    "AutoVolumeProjection",
    "AutoVolumeRenderFn",
    "AxisAnglePose",
    "BasicImageConfig",
    "EulerAnglePose",
    "FFTAtomProjection",
    "FFTAtomRenderFn",
    "FourierSliceExtraction",
    "FourierVoxelGridVolume",
    "FourierVoxelSplineVolume",
    "GaussianFourierVolume",
    "GaussianMixtureProjection",
    "GaussianMixtureRenderFn",
    "GaussianMixtureVolume",
    "IndependentAtomVolume",
    "LobatoScatteringFactor",
    "PengScatteringFactor",
    "PositionJitteredVolume",
    "QuaternionPose",
    "RealVoxelCloudVolume",
    "RealVoxelGridVolume",
    "RealVoxelProjection",
    "load_tabulated_volume",
    "render_voxel_volume",
    "split_atoms_by_element",
]
