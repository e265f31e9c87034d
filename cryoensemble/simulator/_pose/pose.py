"""Rigid-body poses: a rotation and an offset in A, as in cryojax.

Rotation matrices act on column vectors (x, y, z): `r' = R r`. Euler angles are in
degrees, a zyz *extrinsic* sequence (phi about z, then theta about y, then psi about z),
so `R = Rz(psi) Ry(theta) Rz(phi)`. RELION/cisTEM angles describe the inverse (a zyz
intrinsic rotation that undoes the pose): negate each angle to convert.
"""

from abc import abstractmethod

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float


def _rotation_about_z(angle_rad):
    c, s = jnp.cos(angle_rad), jnp.sin(angle_rad)
    zero, one = jnp.zeros_like(c), jnp.ones_like(c)
    return jnp.stack(
        [jnp.stack([c, -s, zero]), jnp.stack([s, c, zero]), jnp.stack([zero, zero, one])]
    )


def _rotation_about_y(angle_rad):
    c, s = jnp.cos(angle_rad), jnp.sin(angle_rad)
    zero, one = jnp.zeros_like(c), jnp.ones_like(c)
    return jnp.stack(
        [jnp.stack([c, zero, s]), jnp.stack([zero, one, zero]), jnp.stack([-s, zero, c])]
    )


def _matmul(a, b):
    # HIGHEST: the default on GPUs is TF32, whose 1e-4 relative error moves atoms.
    return jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)


def _as_float(value):
    return jnp.asarray(value, dtype=float)


class AbstractPose(eqx.Module, strict=True):
    """A rotation and a translation of a 3D coordinate system.

    Subclasses choose how the rotation is parametrized by implementing `rotation_matrix`.
    Offsets are in A; `offset_z_in_angstroms=None` means an in-plane pose (z offset 0).
    """

    offset_x_in_angstroms: eqx.AbstractVar[Float[Array, ""]]
    offset_y_in_angstroms: eqx.AbstractVar[Float[Array, ""]]
    offset_z_in_angstroms: eqx.AbstractVar[Float[Array, ""] | None]

    @property
    @abstractmethod
    def rotation_matrix(self) -> Float[Array, "3 3"]:
        """The 3x3 rotation matrix R acting on column vectors (x, y, z)."""

    @property
    def offset_in_angstroms(self) -> Float[Array, "3"]:
        """The translation (x, y, z) in A (z is 0 for an in-plane pose)."""
        z = (
            jnp.zeros_like(self.offset_x_in_angstroms)
            if self.offset_z_in_angstroms is None
            else self.offset_z_in_angstroms
        )
        return jnp.stack([self.offset_x_in_angstroms, self.offset_y_in_angstroms, z])

    def rotate_coordinates(
        self, coordinates: Float[Array, "... 3"], inverse: bool = False
    ) -> Float[Array, "... 3"]:
        """Rotate coordinates (x, y, z) in their last axis.

        **Arguments:**

        - `coordinates`: an `(N, 3)` list or a `(nz, ny, nx, 3)` grid.
        - `inverse`: if `True`, rotate by `R^T` instead of `R`.
        """
        matrix = self.rotation_matrix
        matrix = matrix.T if inverse else matrix
        coordinates = jnp.asarray(coordinates)
        matrix = matrix.T.astype(jnp.result_type(coordinates, float))
        return _matmul(coordinates, matrix)


class EulerAnglePose(AbstractPose, strict=True):
    """A pose from zyz extrinsic Euler angles in degrees (cryojax convention)."""

    offset_x_in_angstroms: Float[Array, ""]
    offset_y_in_angstroms: Float[Array, ""]
    offset_z_in_angstroms: Float[Array, ""] | None
    phi_angle: Float[Array, ""]
    theta_angle: Float[Array, ""]
    psi_angle: Float[Array, ""]

    def __init__(
        self,
        offset_x_in_angstroms=0.0,
        offset_y_in_angstroms=0.0,
        phi_angle=0.0,
        theta_angle=0.0,
        psi_angle=0.0,
        *,
        offset_z_in_angstroms=None,
    ):
        """**Arguments:**

        - `offset_x_in_angstroms`, `offset_y_in_angstroms`: in-plane translation, A.
        - `phi_angle`: first rotation, about z, degrees.
        - `theta_angle`: second rotation, about y, degrees.
        - `psi_angle`: third rotation, about z, degrees.
        - `offset_z_in_angstroms`: out-of-plane translation, A (`None`: none).
        """
        self.offset_x_in_angstroms = _as_float(offset_x_in_angstroms)
        self.offset_y_in_angstroms = _as_float(offset_y_in_angstroms)
        self.offset_z_in_angstroms = (
            None if offset_z_in_angstroms is None else _as_float(offset_z_in_angstroms)
        )
        self.phi_angle = _as_float(phi_angle)
        self.theta_angle = _as_float(theta_angle)
        self.psi_angle = _as_float(psi_angle)

    @property
    def rotation_matrix(self) -> Float[Array, "3 3"]:
        phi, theta, psi = (
            jnp.deg2rad(a) for a in (self.phi_angle, self.theta_angle, self.psi_angle)
        )
        return _matmul(_matmul(_rotation_about_z(psi), _rotation_about_y(theta)),
                       _rotation_about_z(phi))


class QuaternionPose(AbstractPose, strict=True):
    """A pose from a quaternion (w, x, y, z); it is normalized before use."""

    offset_x_in_angstroms: Float[Array, ""]
    offset_y_in_angstroms: Float[Array, ""]
    offset_z_in_angstroms: Float[Array, ""] | None
    wxyz: Float[Array, "4"]

    def __init__(
        self,
        offset_x_in_angstroms=0.0,
        offset_y_in_angstroms=0.0,
        wxyz=(1.0, 0.0, 0.0, 0.0),
        *,
        offset_z_in_angstroms=None,
    ):
        """**Arguments:**

        - `offset_x_in_angstroms`, `offset_y_in_angstroms`: in-plane translation, A.
        - `wxyz`: the quaternion (q_w, q_x, q_y, q_z).
        - `offset_z_in_angstroms`: out-of-plane translation, A (`None`: none).
        """
        self.offset_x_in_angstroms = _as_float(offset_x_in_angstroms)
        self.offset_y_in_angstroms = _as_float(offset_y_in_angstroms)
        self.offset_z_in_angstroms = (
            None if offset_z_in_angstroms is None else _as_float(offset_z_in_angstroms)
        )
        self.wxyz = _as_float(wxyz)

    @property
    def rotation_matrix(self) -> Float[Array, "3 3"]:
        w, x, y, z = self.wxyz / jnp.linalg.norm(self.wxyz)
        return jnp.stack(
            [
                jnp.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)]),
                jnp.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)]),
                jnp.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]),
            ]
        )


class AxisAnglePose(AbstractPose, strict=True):
    """A pose from an Euler vector (axis times angle, degrees), via the exponential map."""

    offset_x_in_angstroms: Float[Array, ""]
    offset_y_in_angstroms: Float[Array, ""]
    offset_z_in_angstroms: Float[Array, ""] | None
    euler_vector: Float[Array, "3"]

    def __init__(
        self,
        offset_x_in_angstroms=0.0,
        offset_y_in_angstroms=0.0,
        euler_vector=(0.0, 0.0, 0.0),
        *,
        offset_z_in_angstroms=None,
    ):
        """**Arguments:**

        - `offset_x_in_angstroms`, `offset_y_in_angstroms`: in-plane translation, A.
        - `euler_vector`: rotation axis scaled by the angle in degrees.
        - `offset_z_in_angstroms`: out-of-plane translation, A (`None`: none).
        """
        self.offset_x_in_angstroms = _as_float(offset_x_in_angstroms)
        self.offset_y_in_angstroms = _as_float(offset_y_in_angstroms)
        self.offset_z_in_angstroms = (
            None if offset_z_in_angstroms is None else _as_float(offset_z_in_angstroms)
        )
        self.euler_vector = _as_float(euler_vector)

    @property
    def rotation_matrix(self) -> Float[Array, "3 3"]:
        omega = jnp.deg2rad(self.euler_vector)
        # A tiny floor keeps the zero rotation (and its gradient) finite.
        angle = jnp.sqrt(jnp.sum(omega**2) + jnp.finfo(omega.dtype).tiny)
        kx, ky, kz = omega / angle
        k = jnp.stack(
            [
                jnp.stack([0.0 * kx, -kz, ky]),
                jnp.stack([kz, 0.0 * kx, -kx]),
                jnp.stack([-ky, kx, 0.0 * kx]),
            ]
        )
        return jnp.eye(3, dtype=omega.dtype) + jnp.sin(angle) * k + (1 - jnp.cos(angle)) * _matmul(k, k)
