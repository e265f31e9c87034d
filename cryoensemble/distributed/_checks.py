"""Checks of a render before any cluster starts: what can be known from the arguments,
the input headers and this machine is refused here with one line, not found in a task."""

import os
import shutil
import subprocess
import warnings

import numpy as np

from ..errors import InfrastructureError, OutsideBoxWarning, PlanError
from ..io import bulk_centre


OUTSIDE_POLICIES = ("error", "warn", "clip")


def centre_of(source, center, first: np.ndarray | None = None) -> tuple[float, float, float]:
    """The centre subtracted from every position: the bulk centre of the first
    conformation for `center=True` (one stray atom cannot move it), none for `None` or
    `False` (the file's frame), or an (x, y, z) in A. `first`: the first conformation's
    positions, if already read."""
    if center is True:
        centre, _, _ = bulk_centre(source.read(0, 1)[0] if first is None else first)
        return tuple(float(c) for c in centre)
    if center is None or center is False:
        return (0.0, 0.0, 0.0)
    centre = np.asarray(center, dtype=np.float64)
    if centre.shape != (3,) or not np.all(np.isfinite(centre)):
        raise ValueError(f"center: expected True, None or a finite (x, y, z) in A; got {center!r}")
    return tuple(float(c) for c in centre)


def box_bounds(shape, voxel_size: float) -> tuple[np.ndarray, np.ndarray]:
    """The (x, y, z) faces in A of a grid whose voxel i sits at (i - n // 2) * voxel_size."""
    n = np.asarray(shape[::-1], dtype=np.float64)  # (nx, ny, nz)
    low = (-(n // 2) - 0.5) * voxel_size
    return low, low + n * voxel_size


def check_positions_in_box(
    positions, weights, shape, voxel_size: float, outside: str = "warn",
    tolerance: float = 0.01, label: str = "atoms", periodic: bool = False,
    centre=(0.0, 0.0, 0.0),
) -> str | None:
    """Apply the `outside` policy to atoms whose centres fall outside a box.

    **Arguments:**

    - `positions`: (n_atoms, 3) x, y, z in A, as rendered once `centre` is subtracted.
    - `weights`: each atom's scattering (its form factor at zero angle), for the
      fraction lost.
    - `shape`, `voxel_size`: the grid (voxel i at (i - n // 2) * voxel_size).
    - `outside`: `"error"` refuses any atom outside, `"warn"` warns and refuses above
      `tolerance` (a fraction of the scattering), `"clip"` accepts them silently.
    - `label`: what the message calls the atoms (`"conformation 3"`, a file name).
    - `periodic`: the renderer's box is periodic (a Fourier series), so atoms outside
      wrap around to the opposite face instead of being lost.
    - `centre`: (x, y, z) in A subtracted (in float64) from every position.

    Returns the warning issued (an `OutsideBoxWarning`), if any; raises `PlanError`.
    """
    _check_policy(outside, tolerance)
    if outside == "clip":
        return None
    positions = np.asarray(positions)
    if positions.dtype not in (np.float32, np.float64):
        positions = positions.astype(np.float64)
    centre = np.asarray(centre, dtype=np.float64)
    low, high = box_bounds(shape, voxel_size)
    out = _outside(positions, centre, low, high)
    if out is None:
        return None
    positions = positions.astype(np.float64) - centre
    weights = np.asarray(weights, dtype=np.float64)
    lost = float(weights[out].sum() / weights.sum())
    _, n_stray, _ = bulk_centre(positions)
    span = float((positions.max(axis=0) - positions.min(axis=0)).max())
    hint = (f"{n_stray} atoms lie far from the rest (stray coordinates?): drop them with "
            "--exclude or --select" if n_stray else
            f"the atoms span {span:.0f} A: a box of {int(np.ceil(span / voxel_size)) + 2} "
            "voxels holds them")
    message = (f"{label}: {int(out.sum())} of {len(positions)} atoms fall outside the "
               f"{'x'.join(map(str, shape))} box of {voxel_size:g} A voxels "
               + (f"({100 * lost:.3g}% of the scattering wraps around to the opposite face: "
                  "the renderer's box is periodic)" if periodic else
                  f"({100 * lost:.3g}% of the scattering is lost)") + f"; {hint}")
    if outside == "error" or lost > tolerance:
        limit = "" if outside == "error" else f" (more than {100 * tolerance:g}%)"
        accept = "accept the wrap" if periodic else "render what is inside"
        raise PlanError(f"{message}{limit}; or pass --outside clip to {accept}")
    warnings.warn(message, OutsideBoxWarning, stacklevel=3)
    return message


def _check_policy(outside: str, tolerance: float) -> None:
    if outside not in OUTSIDE_POLICIES:
        raise ValueError(f"outside: one of {list(OUTSIDE_POLICIES)}; got {outside!r}")
    if not (np.isfinite(tolerance) and 0 <= tolerance <= 1):
        raise ValueError(f"outside_tolerance: a fraction in [0, 1]; got {tolerance}")


def _outside(positions: np.ndarray, centre: np.ndarray, low: np.ndarray,
             high: np.ndarray) -> np.ndarray | None:
    """Which rows of `positions - centre` (float64) lie outside `[low, high)`, or None
    when none does. Subtracting a constant keeps the order of values, so each axis's
    smallest and largest value decide whether any is out, and only then is every row
    compared (an axis at a time: no (n_atoms, 3) float64 copy)."""
    columns = [positions[:, j] for j in range(3)]
    if all(len(c) == 0 or (np.float64(c.min()) - centre[j] >= low[j]
                           and np.float64(c.max()) - centre[j] < high[j])
           for j, c in enumerate(columns)):
        return None
    out = np.zeros(len(positions), bool)
    for j, column in enumerate(columns):
        shifted = np.subtract(column, centre[j], dtype=np.float64)
        out |= (shifted < low[j]) | (shifted >= high[j])
    return out if out.any() else None  # NaNs fail both comparisons: never out


def check_atoms_in_box(source, spec, weights, outside: str, tolerance: float,
                       periodic: bool = False, samples: int = 16,
                       first: np.ndarray | None = None) -> str | None:
    """`check_positions_in_box` for up to `samples` conformations of a source, evenly
    spaced, the first and last included. `weights`: a function that returns the atoms'
    weights (called only if some atom is out); `first`: the first conformation's
    positions, if already read."""
    if outside == "clip":
        return None
    _check_policy(outside, tolerance)
    centre = np.asarray(spec.centre, dtype=np.float64)
    low, high = box_bounds(spec.shape, spec.voxel_size)
    n = len(source)
    for index in np.unique(np.linspace(0, n - 1, min(n, samples)).round().astype(int)):
        positions = (first if index == 0 and first is not None
                     else source.read(int(index), int(index) + 1)[0])
        if _outside(positions, centre, low, high) is None:
            continue
        message = check_positions_in_box(
            positions, weights(), spec.shape, spec.voxel_size, outside, tolerance,
            f"conformation {index}", periodic, centre=centre)
        if message is not None:
            return message
    return None


def check_store_path(location, parameters: dict, overwrite: bool) -> None:
    """A local store path (of a `StoreLocation`) that cannot be written, or would be
    refused, before work starts."""
    from .. import store as store_module

    store = location.url
    if "://" in store:  # remote stores are checked by the store itself
        return
    if os.path.isfile(store):
        raise PlanError(f"{store}: is a file, not a store directory; choose another --out")
    if os.path.isdir(store):
        # A folder that holds something else is refused by the store itself
        # (`check_target`), which also knows a store being created under another's lease.
        existing = store_module.read_parameters(store)
        parameters = store_module.canonical_parameters(parameters)
        if existing is not None and existing != parameters and not overwrite:
            changed = sorted(k for k in set(existing) | set(parameters)
                             if existing.get(k) != parameters.get(k))
            raise store_module.StoreMismatchError(
                f"{store}: made with other parameters ({', '.join(changed)}); pass "
                "--overwrite to replace it, or choose another --out")
        target = store
    else:
        target = os.path.dirname(store)
        while target and not os.path.exists(target):
            target = os.path.dirname(target)
        if os.path.isfile(target):
            raise PlanError(f"{store}: {target} is a file, not a directory")
    if not os.access(target or ".", os.W_OK | os.X_OK):
        raise PlanError(f"{store}: {target or '.'} is not writable; choose another --out")


def worker_memory_bytes(n_workers: int) -> int:
    """The memory an embedded cluster's worker may use: this machine's (or its cgroup
    limit), shared."""
    from distributed.system import MEMORY_LIMIT

    return int(MEMORY_LIMIT // max(1, n_workers))


def check_memory(plan, memory_bytes: int, where: str) -> None:
    """Refuse a plan whose tasks need more memory than a worker has."""
    need = plan.memory_per_task_bytes
    if need > memory_bytes:
        volume = int(np.prod(plan.spec.shape)) * 4
        hint = ("a smaller --shape or a larger --voxel-size" if volume > memory_bytes / 2
                else "--n-batches to split the atoms, or a smaller --batch-size")
        raise PlanError(
            f"each task needs ~{need / 2**20:,.0f} MiB but {where} has "
            f"{memory_bytes / 2**20:,.0f} MiB per worker; use {hint}"
        )


def visible_gpus() -> int:
    """NVIDIA GPUs this machine shows (`nvidia-smi -L`), without initializing CUDA in
    this process; 0 where there is no driver."""
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True,
                                 timeout=20, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    count = sum(line.startswith("GPU ") for line in listing.splitlines())
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        count = min(count, len([d for d in visible.split(",") if d.strip()]))
    return count


def check_gpus(gpus: int | None) -> None:
    """`gpus` workers need that many GPUs on this machine."""
    if not gpus:
        return
    found = visible_gpus()
    if found < gpus:
        raise InfrastructureError(
            f"--gpus {gpus}: this machine shows {found} NVIDIA GPU(s) (nvidia-smi -L); "
            "drop --gpus to render on the CPU, or use a machine with GPUs"
        )


def check_scheduler_file(scheduler_file: str | None) -> None:
    """A `--scheduler-file` that does not exist (yet), named before anything starts."""
    if scheduler_file is not None and not os.path.isfile(scheduler_file):
        raise InfrastructureError(f"--scheduler-file {scheduler_file}: no such file (does the "
                                  "scheduler run with --scheduler-file?)")
