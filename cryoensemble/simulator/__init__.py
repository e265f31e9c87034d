"""Volumes, poses, renderers and projections (pure JAX + equinox), in cryojax's API."""

from ..atom_util import split_atoms_by_element as split_atoms_by_element
from ..ndimage.scattering_factors import (
    LobatoScatteringFactor as LobatoScatteringFactor,
    PengScatteringFactor as PengScatteringFactor,
)
from ._api_utils import (
    load_tabulated_volume as load_tabulated_volume,
    render_voxel_volume as render_voxel_volume,
)
from ._image_config import (
    AbstractImageConfig as AbstractImageConfig,
    BasicImageConfig as BasicImageConfig,
)
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
from ._volume_rendering.auto import AutoVolumeRenderFn as AutoVolumeRenderFn
from ._volume_rendering.fft_atom import FFTAtomRenderFn as FFTAtomRenderFn
from ._volume_rendering.gaussian_mixture import GaussianMixtureRenderFn as GaussianMixtureRenderFn
from ._volume.gaussian_mixture import GaussianMixtureVolume as GaussianMixtureVolume
from ._volume.perturbed import PositionJitteredVolume as PositionJitteredVolume
from ._volume.independent_atom import IndependentAtomVolume as IndependentAtomVolume
from ._pose.pose import (
    SO3 as SO3,
    AbstractPose as AbstractPose,
    AxisAnglePose as AxisAnglePose,
    EulerAnglePose as EulerAnglePose,
    QuaternionPose as QuaternionPose,
)
from ._volume_integrator.projection import (
    AbstractVolumeIntegrator as AbstractVolumeIntegrator,
    AutoVolumeProjection as AutoVolumeProjection,
    FFTAtomProjection as FFTAtomProjection,
    FourierSliceExtraction as FourierSliceExtraction,
    GaussianMixtureProjection as GaussianMixtureProjection,
    RealVoxelProjection as RealVoxelProjection,
)
from ._volume_rendering.base_rendering import AbstractVolumeRenderFn as AbstractVolumeRenderFn
from ._volume_rendering.support_plan import (
    ConcreteMixture as ConcreteMixture,
    SupportPlan as SupportPlan,
    atoms_touching_planes as atoms_touching_planes,
    touching_planes_mask as touching_planes_mask,
    window_first_planes as window_first_planes,
)
from ._volume.base_volume import (
    AbstractAtomVolume as AbstractAtomVolume,
    AbstractVolumeParametrization as AbstractVolumeParametrization,
    AbstractVolumeRepresentation as AbstractVolumeRepresentation,
)
from ._volume.voxel_volumes import (
    AbstractVoxelVolume as AbstractVoxelVolume,
    FourierVoxelGridVolume as FourierVoxelGridVolume,
    FourierVoxelSplineVolume as FourierVoxelSplineVolume,
    RealVoxelCloudVolume as RealVoxelCloudVolume,
    RealVoxelGridVolume as RealVoxelGridVolume,
)


# cryojax 0.5's name of the same CTF.
AberratedAstigmaticCTF = AstigmaticCTF
# cryojax 0.6's name of the same class.
GaussianFourierVolume = IndependentAtomVolume

__all__ = [
    "SO3",
    "AbstractCTF",
    "AberratedAstigmaticCTF",
    "AstigmaticCTF",
    "ContrastTransferTheory",
    "GaussianFourierVolume",
    "GaussianMixtureImageModel",
    "add_white_noise",
    "phase_contrast_image",
    "project_gaussian_mixture",
    "projection_window",
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
    "ConcreteMixture",
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
    "SupportPlan",
    "atoms_touching_planes",
    "load_tabulated_volume",
    "render_voxel_volume",
    "split_atoms_by_element",
    "touching_planes_mask",
    "window_first_planes",
]
