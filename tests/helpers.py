"""What tests share besides fixtures: the shared data paths and independent references."""

import os
import pathlib

import numpy as np


ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("CRYOENSEMBLE_SHARED", ROOT.parent / "shared"))
DATA = SHARED / "data"
REFERENCE = SHARED / "reference"
TEST_DATA = ROOT / "tests" / "data"

GOLDEN = {
    "cubic96": REFERENCE / "adk_closed_cubic96_1.0A_noB.npz",
    "zyx80x96x112_bfactors": REFERENCE / "adk_closed_zyx80x96x112_0.85A_Bfactors.npz",
}


def relative_l2(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def direct_voxel_average(positions, amplitudes, variances, shape, voxel_size):
    """Independent float64 reference: numpy/scipy, every gaussian on every voxel."""
    from scipy.special import erf

    positions = np.asarray(positions, np.float64)
    amplitudes = np.broadcast_to(np.asarray(amplitudes, np.float64), variances.shape)
    sigma = np.sqrt(np.asarray(variances, np.float64))
    out = np.zeros(shape)
    axes = [(np.arange(n) - n // 2) * voxel_size for n in shape]  # z, y, x
    for p, a_row, s_row in zip(positions, amplitudes, sigma):
        for a, s in zip(a_row, s_row):
            profiles = []
            for axis, coordinate in zip(axes, (p[2], p[1], p[0])):
                hi = (axis - coordinate + voxel_size / 2) / (np.sqrt(2) * s)
                lo = (axis - coordinate - voxel_size / 2) / (np.sqrt(2) * s)
                profiles.append(0.5 * (erf(hi) - erf(lo)))
            out += a / voxel_size**3 * np.einsum("i,j,k->ijk", *profiles)
    return out
