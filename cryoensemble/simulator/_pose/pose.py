"""Rigid-body poses: a rotation and an offset in A, as in cryojax.

Rotation matrices act on column vectors (x, y, z): `r' = R r`. Euler angles are in
degrees, a zyz *extrinsic* sequence (phi about z, then theta about y, then psi about z),
so `R = Rz(psi) Ry(theta) Rz(phi)`. RELION/cisTEM angles describe the inverse (a zyz
intrinsic rotation that undoes the pose): negate each angle to convert.

As in cryojax, a pose stores `offset_in_angstroms`, shape `(2,)` for an in-plane
translation or `(3,)`, exposes its rotation as an `SO3` (`pose.rotation`), and is built
from a rotation with `from_rotation` / `from_rotation_and_translation`; those accept any
rotation object with a unit quaternion `wxyz` (scalar first), cryojax's `SO3` included.
"""

from abc import abstractmethod
from typing import Self

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Complex, Float


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


def _quaternion_to_matrix(wxyz: Float[Array, "4"]) -> Float[Array, "3 3"]:
    w, x, y, z = wxyz / jnp.linalg.norm(wxyz)
    return jnp.stack(
        [
            jnp.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)]),
            jnp.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)]),
            jnp.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]),
        ]
    )


def _matrix_to_quaternion(m: Float[Array, "3 3"]) -> Float[Array, "4"]:
    """Shepperd's method: build from the largest of w^2, x^2, y^2, z^2 (stable)."""
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    candidates = jnp.stack(
        [
            jnp.stack([1 + trace, m[2, 1] - m[1, 2], m[0, 2] - m[2, 0], m[1, 0] - m[0, 1]]),
            jnp.stack([m[2, 1] - m[1, 2], 1 + m[0, 0] - m[1, 1] - m[2, 2], m[0, 1] + m[1, 0], m[0, 2] + m[2, 0]]),
            jnp.stack([m[0, 2] - m[2, 0], m[0, 1] + m[1, 0], 1 - m[0, 0] + m[1, 1] - m[2, 2], m[1, 2] + m[2, 1]]),
            jnp.stack([m[1, 0] - m[0, 1], m[0, 2] + m[2, 0], m[1, 2] + m[2, 1], 1 - m[0, 0] - m[1, 1] + m[2, 2]]),
        ]
    )
    best = jnp.argmax(jnp.stack([trace, m[0, 0], m[1, 1], m[2, 2]]))
    q = candidates[best]
    q = q / jnp.linalg.norm(q)
    # The convention of a non-negative scalar part.
    return jnp.where(q[0] < 0, -q, q)


class SO3(eqx.Module):
    """A 3D rotation as a unit quaternion `wxyz` (scalar first), cryojax's `SO3` API."""

    wxyz: Float[Array, "4"]

    def __init__(self, wxyz=(1.0, 0.0, 0.0, 0.0)):
        """**Arguments:**

        - `wxyz`: the quaternion (w, x, y, z); `normalize()` makes it a unit one.
        """
        self.wxyz = _as_float(wxyz)

    def as_matrix(self) -> Float[Array, "3 3"]:
        """The 3x3 rotation matrix acting on column vectors (x, y, z)."""
        return _quaternion_to_matrix(self.wxyz)

    def normalize(self) -> "SO3":
        """The same rotation with a unit quaternion."""
        return SO3(self.wxyz / jnp.linalg.norm(self.wxyz))

    def inverse(self) -> "SO3":
        """The inverse rotation (the conjugate quaternion)."""
        return SO3(self.wxyz * jnp.asarray([1.0, -1.0, -1.0, -1.0], self.wxyz.dtype))

    def apply(self, vector: Float[Array, "3"]) -> Float[Array, "3"]:
        """Rotate a vector (x, y, z)."""
        return _matmul(self.as_matrix(), jnp.asarray(vector))

    def __matmul__(self, other: "SO3") -> "SO3":
        """The composition `self` after `other`."""
        w1, x1, y1, z1 = self.wxyz
        w2, x2, y2, z2 = other.wxyz
        return SO3(
            jnp.stack(
                [
                    w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
                    w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                    w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
                    w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
                ]
            )
        )

    @classmethod
    def from_matrix(cls, matrix: Float[Array, "3 3"]) -> "SO3":
        """The rotation of a 3x3 rotation matrix."""
        return cls(_matrix_to_quaternion(jnp.asarray(matrix, dtype=float)))

    @classmethod
    def identity(cls) -> "SO3":
        """The identity rotation."""
        return cls((1.0, 0.0, 0.0, 0.0))

    @classmethod
    def exp(cls, tangent: Float[Array, "3"]) -> "SO3":
        """The rotation by `|tangent|` radians about `tangent` (the exponential map)."""
        tangent = _as_float(tangent)
        theta2 = jnp.sum(tangent**2)
        # A floor keeps the zero rotation (and its gradient) finite.
        theta = jnp.sqrt(theta2 + jnp.finfo(tangent.dtype).tiny)
        return cls(jnp.concatenate([jnp.cos(theta / 2)[None], jnp.sin(theta / 2) / theta * tangent]))

    def log(self) -> Float[Array, "3"]:
        """The tangent vector (axis times angle, radians): the inverse of `exp`."""
        q = self.wxyz / jnp.linalg.norm(self.wxyz)
        q = jnp.where(q[0] < 0, -q, q)
        norm = jnp.sqrt(jnp.sum(q[1:] ** 2) + jnp.finfo(q.dtype).tiny)
        angle = 2 * jnp.arctan2(norm, q[0])
        return angle / norm * q[1:]

    @classmethod
    def from_x_radians(cls, angle) -> "SO3":
        """The rotation by `angle` radians about x."""
        return cls.exp(jnp.stack([_as_float(angle), 0.0 * _as_float(angle), 0.0 * _as_float(angle)]))

    @classmethod
    def from_y_radians(cls, angle) -> "SO3":
        """The rotation by `angle` radians about y."""
        return cls.exp(jnp.stack([0.0 * _as_float(angle), _as_float(angle), 0.0 * _as_float(angle)]))

    @classmethod
    def from_z_radians(cls, angle) -> "SO3":
        """The rotation by `angle` radians about z."""
        return cls.exp(jnp.stack([0.0 * _as_float(angle), 0.0 * _as_float(angle), _as_float(angle)]))


def _offset(x, y, z) -> Float[Array, "2"] | Float[Array, "3"]:
    return _as_float((x, y) if z is None else (x, y, z))


class AbstractPose(eqx.Module):
    """A rotation and a translation of a 3D coordinate system.

    Subclasses choose how the rotation is parametrized by implementing `rotation_matrix`,
    `from_rotation` and `to_inverse_rotation`. `offset_in_angstroms` is (x, y) for an
    in-plane pose or (x, y, z), in A.
    """

    offset_in_angstroms: eqx.AbstractVar[Float[Array, "2"] | Float[Array, "3"]]

    @property
    @abstractmethod
    def rotation_matrix(self) -> Float[Array, "3 3"]:
        """The 3x3 rotation matrix R acting on column vectors (x, y, z)."""

    @property
    def rotation(self) -> SO3:
        """The rotation as an `SO3` (unit quaternion)."""
        return SO3.from_matrix(self.rotation_matrix)

    @classmethod
    @abstractmethod
    def from_rotation(cls, rotation) -> Self:
        """The pose of a rotation (anything with a unit quaternion `wxyz`), no offset.

        **Arguments:**

        - `rotation`: an `SO3` (this module's or cryojax's).
        """

    @classmethod
    def from_rotation_and_translation(cls, rotation, offset_in_angstroms) -> Self:
        """The pose of a rotation and an offset.

        **Arguments:**

        - `rotation`: an `SO3` (this module's or cryojax's).
        - `offset_in_angstroms`: (x, y) or (x, y, z), A.
        """
        offset = _as_float(offset_in_angstroms)
        if offset.shape not in ((2,), (3,)):
            raise ValueError(
                f"{cls.__name__}.from_rotation_and_translation: offset_in_angstroms must "
                f"have shape (2,) or (3,); got {offset.shape}"
            )
        return eqx.tree_at(lambda p: p.offset_in_angstroms, cls.from_rotation(rotation), offset)

    @classmethod
    def from_translation(cls, offset_in_angstroms) -> Self:
        """The pose of an offset (x, y) or (x, y, z) in A, no rotation."""
        return cls.from_rotation_and_translation(SO3.identity(), offset_in_angstroms)

    @abstractmethod
    def to_inverse_rotation(self) -> Self:
        """The pose with the inverse rotation (the offset is kept)."""

    @property
    def offset_x_in_angstroms(self) -> Float[Array, ""]:
        """The translation along x, A."""
        return self.offset_in_angstroms[..., 0]

    @property
    def offset_y_in_angstroms(self) -> Float[Array, ""]:
        """The translation along y, A."""
        return self.offset_in_angstroms[..., 1]

    @property
    def offset_z_in_angstroms(self) -> Float[Array, ""] | None:
        """The translation along z, A (`None` for an in-plane pose)."""
        if self.offset_in_angstroms.shape[-1] == 2:
            return None
        return self.offset_in_angstroms[..., 2]

    @property
    def offset_in_angstroms_3d(self) -> Float[Array, "3"]:
        """The translation (x, y, z) in A, z = 0 for an in-plane pose."""
        offset = self.offset_in_angstroms
        if offset.shape[-1] == 2:
            offset = jnp.concatenate([offset, jnp.zeros_like(offset[..., :1])], axis=-1)
        return offset

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

    def compute_translation_operator(
        self, frequency_grid_in_angstroms: Float[Array, "ny nx 2"]
    ) -> Complex[Array, "ny nx"]:
        """The phase shifts `exp(-2 pi i (t_x q_x + t_y q_y))` of the in-plane offset.

        **Arguments:**

        - `frequency_grid_in_angstroms`: in-plane frequencies (q_x, q_y), A^-1.
        """
        xy = self.offset_in_angstroms[:2]
        phase = jnp.sum(jnp.asarray(frequency_grid_in_angstroms) * xy, axis=-1)
        return jnp.exp(-2j * jnp.pi * phase)

    def translate_image(
        self,
        fourier_image: Complex[Array, "ny nx//2+1"],
        translation_operator: Complex[Array, "ny nx//2+1"],
        shape: tuple[int, int],
    ) -> Complex[Array, "ny nx//2+1"]:
        """Apply `compute_translation_operator`'s phases to an `rfftn` image.

        **Arguments:**

        - `fourier_image`: the image's `rfftn`.
        - `translation_operator`: the phase shifts on the same grid.
        - `shape`: the real-space shape of the image.
        """
        del shape
        return fourier_image * translation_operator


class EulerAnglePose(AbstractPose):
    """A pose from zyz extrinsic Euler angles in degrees (cryojax convention)."""

    offset_in_angstroms: Float[Array, "2"] | Float[Array, "3"]
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
        self.offset_in_angstroms = _offset(
            offset_x_in_angstroms, offset_y_in_angstroms, offset_z_in_angstroms
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

    @classmethod
    def from_rotation(cls, rotation) -> Self:
        """The zyz extrinsic angles of a rotation, theta in [0, 180] degrees."""
        m = _quaternion_to_matrix(_as_float(rotation.wxyz))
        # R[2] = (-sin t cos phi, sin t sin phi, cos t); R[:, 2] = (cos psi sin t,
        # sin psi sin t, cos t).
        theta = jnp.arccos(jnp.clip(m[2, 2], -1.0, 1.0))
        phi = jnp.arctan2(m[2, 1], -m[2, 0])
        psi = jnp.arctan2(m[1, 2], m[0, 2])
        # Gimbal lock (sin theta = 0): only phi +- psi is defined; put it all in phi.
        locked = jnp.hypot(m[2, 0], m[2, 1]) < 1e-12
        phi_locked = jnp.where(m[2, 2] > 0, jnp.arctan2(m[1, 0], m[0, 0]), jnp.arctan2(m[1, 0], -m[0, 0]))
        phi = jnp.where(locked, phi_locked, phi)
        psi = jnp.where(locked, 0.0, psi)
        return cls(phi_angle=jnp.rad2deg(phi), theta_angle=jnp.rad2deg(theta), psi_angle=jnp.rad2deg(psi))

    def to_inverse_rotation(self) -> Self:
        """The inverse: angles (-psi, -theta, -phi), wrapped to [-180, 180)."""
        wrap = lambda angle: ((-angle + 180.0) % 360.0) - 180.0  # noqa: E731
        return eqx.tree_at(
            lambda p: (p.phi_angle, p.theta_angle, p.psi_angle),
            self,
            (wrap(self.psi_angle), wrap(self.theta_angle), wrap(self.phi_angle)),
        )


class QuaternionPose(AbstractPose):
    """A pose from a quaternion (w, x, y, z); it is normalized before use."""

    offset_in_angstroms: Float[Array, "2"] | Float[Array, "3"]
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
        self.offset_in_angstroms = _offset(
            offset_x_in_angstroms, offset_y_in_angstroms, offset_z_in_angstroms
        )
        self.wxyz = _as_float(wxyz)

    @property
    def rotation_matrix(self) -> Float[Array, "3 3"]:
        return _quaternion_to_matrix(self.wxyz)

    @property
    def rotation(self) -> SO3:
        """The rotation as an `SO3` of the normalized `wxyz` (its sign kept)."""
        return SO3(self.wxyz).normalize()

    @classmethod
    def from_rotation(cls, rotation) -> Self:
        """The pose of the rotation's quaternion."""
        return cls(wxyz=rotation.wxyz)

    def to_inverse_rotation(self) -> Self:
        """The inverse: the conjugate quaternion."""
        return eqx.tree_at(lambda p: p.wxyz, self, self.rotation.inverse().wxyz)


class AxisAnglePose(AbstractPose):
    """A pose from an Euler vector (axis times angle, degrees), via the exponential map."""

    offset_in_angstroms: Float[Array, "2"] | Float[Array, "3"]
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
        self.offset_in_angstroms = _offset(
            offset_x_in_angstroms, offset_y_in_angstroms, offset_z_in_angstroms
        )
        euler_vector = _as_float(euler_vector)
        if euler_vector.shape != (3,):
            raise ValueError(f"AxisAnglePose: euler_vector must have 3 entries; got {euler_vector.shape}")
        self.euler_vector = euler_vector

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

    @property
    def rotation(self) -> SO3:
        """The rotation `exp(euler_vector)` (radians) as an `SO3`."""
        return SO3.exp(jnp.deg2rad(self.euler_vector))

    @classmethod
    def from_rotation(cls, rotation) -> Self:
        """The Euler vector of a rotation (the logarithmic map), degrees."""
        return cls(euler_vector=jnp.rad2deg(SO3(rotation.wxyz).log()))

    def to_inverse_rotation(self) -> Self:
        """The inverse: the negated Euler vector."""
        return eqx.tree_at(lambda p: p.euler_vector, self, -self.euler_vector)
