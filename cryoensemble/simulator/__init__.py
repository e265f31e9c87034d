"""Volumes, poses, renderers and projections (pure JAX + equinox)."""

from .auto_render import AutoVolumeRenderFn as AutoVolumeRenderFn
from .fft_atom_render import FFTAtomRenderFn as FFTAtomRenderFn
from .gaussian_mixture_render import GaussianMixtureRenderFn as GaussianMixtureRenderFn
from .gaussian_mixture_volume import GaussianMixtureVolume as GaussianMixtureVolume
from .perturbed_volume import PositionJitteredVolume as PositionJitteredVolume
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
from .support_plan import (
    ConcreteMixture as ConcreteMixture,
    SupportPlan as SupportPlan,
    atoms_touching_planes as atoms_touching_planes,
)
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


__all__ = [
    "AbstractAtomVolume",
    "AbstractPose",
    "AbstractVolumeIntegrator",
    "AbstractVolumeParametrization",
    "AbstractVolumeRenderFn",
    "AbstractVolumeRepresentation",
    "AbstractVoxelVolume",
    "AutoVolumeRenderFn",
    "AxisAnglePose",
    "ConcreteMixture",
    "EulerAnglePose",
    "FFTAtomRenderFn",
    "FourierSliceExtraction",
    "FourierVoxelGridVolume",
    "FourierVoxelSplineVolume",
    "GaussianMixtureProjection",
    "GaussianMixtureRenderFn",
    "GaussianMixtureVolume",
    "IndependentAtomVolume",
    "PositionJitteredVolume",
    "QuaternionPose",
    "RealVoxelGridVolume",
    "RealVoxelProjection",
    "SupportPlan",
    "atoms_touching_planes",
    "split_atoms_by_element",
]
