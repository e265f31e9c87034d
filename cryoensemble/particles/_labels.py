"""Per-particle labels: conformation, pose, shift, CTF and noise seed, drawn up front.

Every random choice is drawn on the client from `numpy.random.SeedSequence(seed)`, one
independent stream per kind (conformations, poses, shifts, CTF, noise seeds), so turning
the CTF or the noise off leaves the poses of the same seed unchanged.
"""

import dataclasses

import numpy as np

from ..errors import CryoEnsembleError


class ParticleParameterError(CryoEnsembleError, ValueError):
    """An invalid particle-simulation parameter."""


def _range(value, name: str, lowest: float) -> tuple[float, float]:
    low, high = (value, value) if np.ndim(value) == 0 else tuple(value)
    low, high = float(low), float(high)
    if not (np.isfinite(low) and np.isfinite(high) and lowest <= low <= high):
        raise ParticleParameterError(
            f"{name}: expected a value or (min, max) with {lowest} <= min <= max; got {value!r}"
        )
    return low, high


@dataclasses.dataclass(frozen=True)
class CTFDistribution:
    """How the CTF of each particle is drawn (cryojax/RELION conventions).

    Ranges `(min, max)` are drawn uniformly per particle; a single number is fixed.

    **Arguments:**

    - `defocus_in_angstroms`: the mean defocus (U + V) / 2 in A, positive underfocus.
    - `astigmatism_in_angstroms`: U - V in A; its angle is uniform in [0, 180) degrees.
    - `spherical_aberration_in_mm`: Cs, mm.
    - `amplitude_contrast_ratio`: a fraction in [0, 1).
    - `phase_shift`: degrees.
    - `b_factor`: the envelope `exp(-B |k|^2 / 4)`, A^2 (RELION's rlnCtfBfactor).
    """

    defocus_in_angstroms: float | tuple[float, float] = (10000.0, 25000.0)
    astigmatism_in_angstroms: float | tuple[float, float] = 0.0
    spherical_aberration_in_mm: float = 2.7
    amplitude_contrast_ratio: float = 0.1
    phase_shift: float = 0.0
    b_factor: float | tuple[float, float] = 0.0

    def __post_init__(self):
        _range(self.defocus_in_angstroms, "defocus_in_angstroms", 0.0)
        _range(self.astigmatism_in_angstroms, "astigmatism_in_angstroms", 0.0)
        _range(self.b_factor, "b_factor", 0.0)
        if not self.spherical_aberration_in_mm >= 0:
            raise ParticleParameterError(
                f"spherical_aberration_in_mm: must be >= 0; got {self.spherical_aberration_in_mm}"
            )
        if not 0 <= self.amplitude_contrast_ratio < 1:
            raise ParticleParameterError(
                f"amplitude_contrast_ratio: must be in [0, 1); got {self.amplitude_contrast_ratio}"
            )

    def sample(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        """Per-particle CTF labels in RELION's terms (defocus U/V in A, angles in
        degrees, Cs in mm, B in A^2)."""
        def uniform(value, name, lowest):
            low, high = _range(value, name, lowest)
            return rng.uniform(low, high, n) if high > low else np.full(n, low)

        defocus = uniform(self.defocus_in_angstroms, "defocus_in_angstroms", 0.0)
        astigmatism = uniform(self.astigmatism_in_angstroms, "astigmatism_in_angstroms", 0.0)
        angle = rng.uniform(0.0, 180.0, n)
        b_factor = uniform(self.b_factor, "b_factor", 0.0)
        return {
            "defocus_u": defocus + astigmatism / 2,
            "defocus_v": defocus - astigmatism / 2,
            "defocus_angle": angle,
            "phase_shift": np.full(n, float(self.phase_shift)),
            "ctf_b_factor": b_factor,
            "spherical_aberration": np.full(n, float(self.spherical_aberration_in_mm)),
            "amplitude_contrast": np.full(n, float(self.amplitude_contrast_ratio)),
        }

    def description(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v)
                for k, v in dataclasses.asdict(self).items()}


def uniform_quaternions(rng: np.random.Generator, n: int) -> np.ndarray:
    """`n` rotations uniform on SO(3) as unit quaternions (w, x, y, z), w >= 0."""
    q = rng.standard_normal((n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return q * np.where(q[:, :1] < 0, -1.0, 1.0)


def checked_quaternions(poses, n: int) -> np.ndarray:
    """Given poses as an `(n, 4)` array of quaternions (w, x, y, z), normalized."""
    q = np.asarray(poses, dtype=np.float64)
    if q.shape != (n, 4):
        raise ParticleParameterError(
            f"poses: expected {n} quaternions (w, x, y, z), shape ({n}, 4); got {q.shape}"
        )
    norm = np.linalg.norm(q, axis=1, keepdims=True)
    if not np.all(np.isfinite(q)) or np.any(norm < 1e-6):
        raise ParticleParameterError("poses: quaternions must be finite and non-zero")
    return q / norm


def relion_angles(wxyz: np.ndarray) -> np.ndarray:
    """RELION's (rot, tilt, psi) in degrees of the rotations that quaternions (w, x, y,
    z) apply to the model (`r' = R r`, cryojax's `QuaternionPose`).

    RELION's angles undo the pose: R is RELION's matrix A(rot, tilt, psi)
    `= Rz(-psi) Ry(-tilt) Rz(-rot)`, so `R^T = Rz(rot) Ry(tilt) Rz(psi)`, the intrinsic
    ZYZ rotation of those angles. Equivalently cryojax's
    `EulerAnglePose(phi_angle=-rot, theta_angle=-tilt, psi_angle=-psi)`.
    """
    w, x, y, z = (np.asarray(wxyz, np.float64) / np.linalg.norm(wxyz, axis=1, keepdims=True)).T
    # M = R^T = Rz(rot) Ry(tilt) Rz(psi), from the quaternion (R^T is its conjugate's).
    m02, m12, m22 = 2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)
    m20, m21 = 2 * (x * z + w * y), 2 * (y * z - w * x)
    m00, m10 = 1 - 2 * (y * y + z * z), 2 * (x * y - w * z)
    sin_tilt = np.hypot(m02, m12)
    tilt = np.arctan2(sin_tilt, m22)
    rot = np.arctan2(m12, m02)
    psi = np.arctan2(m21, -m20)
    # At tilt 0 or 180 only rot +- psi is defined: psi = 0, rot takes it all.
    flat = sin_tilt < 1e-9
    rot = np.where(flat, np.where(m22 > 0, np.arctan2(m10, m00), np.arctan2(-m10, -m00)), rot)
    psi = np.where(flat, 0.0, psi)
    return np.degrees(np.stack([rot, tilt, psi], axis=1))


def conformation_weights(n_conformations: int, weights, source_labels: dict) -> np.ndarray:
    """Normalized weights: `weights` if given, else the source's `weight` label, else
    uniform."""
    if weights is None:
        weights = source_labels.get("weight")
    if weights is None:
        return np.full(n_conformations, 1.0 / n_conformations)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n_conformations,):
        raise ParticleParameterError(
            f"weights: expected one per conformation ({n_conformations}); got shape {w.shape}"
        )
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ParticleParameterError("weights: must be finite, >= 0, and not all 0")
    return w / w.sum()


def draw_labels(
    n_images: int, n_conformations: int, weights: np.ndarray, *, seed: int, poses,
    ctf: CTFDistribution | None, shift_sigma: float,
) -> dict[str, np.ndarray]:
    """Every per-particle label (numpy arrays of length `n_images`, the quaternion
    `(n_images, 4)`)."""
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5)]
    conformation_rng, pose_rng, shift_rng, ctf_rng, noise_rng = streams
    labels = {"conformation": conformation_rng.choice(n_conformations, size=n_images, p=weights)}
    q = (uniform_quaternions(pose_rng, n_images) if poses is None
         else checked_quaternions(poses, n_images))
    labels["quaternion"] = q
    angles = relion_angles(q)
    labels["angle_rot"], labels["angle_tilt"], labels["angle_psi"] = angles.T
    shifts = (shift_rng.normal(0.0, shift_sigma, (n_images, 2)) if shift_sigma > 0
              else np.zeros((n_images, 2)))
    labels["shift_x"], labels["shift_y"] = shifts.T
    if ctf is not None:
        labels.update(ctf.sample(ctf_rng, n_images))
    labels["noise_seed"] = noise_rng.integers(0, 2**32, n_images, dtype=np.uint32)
    return labels
