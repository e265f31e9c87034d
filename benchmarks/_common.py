"""What every benchmark shares: where the data is, the error measure, the timer and the
machine line. Benchmarks run as scripts (`python benchmarks/X.py`), so this imports as
`_common`."""

import os
import pathlib
import platform
import time

import numpy as np


REPO = pathlib.Path(__file__).resolve().parents[1]
# The project's shared folder next to the checkout (CRYOENSEMBLE_SHARED overrides it).
SHARED = pathlib.Path(os.environ.get("CRYOENSEMBLE_SHARED", REPO.parent / "shared"))
DATA = SHARED / "data"
REFERENCE = SHARED / "reference"


def relative_l2(a, b) -> float:
    """||a - b|| / ||b|| in float64."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def tasks_by_worker(results) -> dict:
    """Task results that say when they ran (`started`, `finished`), grouped by worker pid."""
    grouped: dict = {}
    for result in results:
        if "started" in result:
            grouped.setdefault(result["pid"], []).append(result)
    return grouped


def timed(fn, repeats: int = 5) -> float:
    """Median seconds of `repeats` calls of `fn` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line(start_jax: bool = True) -> str:
    """One line naming the machine, its accelerators and the versions that matter.
    `start_jax=False` (a Dask client whose workers hold the GPUs) names NVIDIA GPUs with
    nvidia-smi instead of starting a JAX backend, which would take GPU memory here."""
    import subprocess

    import jax

    import cryoensemble

    if start_jax:
        devices = ", ".join(sorted({str(d.device_kind) for d in jax.devices()}))
    else:
        try:
            names = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                                   capture_output=True, text=True, timeout=30).stdout.split("\n")
            devices = ", ".join(sorted({n.strip() for n in names if n.strip()})) or "no GPU"
        except (OSError, subprocess.SubprocessError):
            devices = "no GPU"
    return (f"# {cpu_name()} | {os.cpu_count()} CPUs | {platform.platform()} | jax "
            f"{jax.__version__} on {devices} | cryoensemble {cryoensemble.__version__}")
