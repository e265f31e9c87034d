"""Volumes, poses and renderers (pure JAX + equinox)."""

from .gaussian_mixture_render import GaussianMixtureRenderFn as GaussianMixtureRenderFn
from .gaussian_mixture_volume import GaussianMixtureVolume as GaussianMixtureVolume
from .pose import (
    AbstractPose as AbstractPose,
    AxisAnglePose as AxisAnglePose,
    EulerAnglePose as EulerAnglePose,
    QuaternionPose as QuaternionPose,
)
from .render_base import AbstractVolumeRenderFn as AbstractVolumeRenderFn
from .volume_base import (
    AbstractAtomVolume as AbstractAtomVolume,
    AbstractVolumeParametrization as AbstractVolumeParametrization,
    AbstractVolumeRepresentation as AbstractVolumeRepresentation,
)


__all__ = [
    "AbstractAtomVolume",
    "AbstractPose",
    "AbstractVolumeParametrization",
    "AbstractVolumeRenderFn",
    "AbstractVolumeRepresentation",
    "AxisAnglePose",
    "EulerAnglePose",
    "GaussianMixtureRenderFn",
    "GaussianMixtureVolume",
    "QuaternionPose",
]
