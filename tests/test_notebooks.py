"""The notebooks run top to bottom (nbclient, a fresh kernel each) on data from PyPI
packages only, produce their figures, and compute what they claim."""

import os
import pathlib
import re
import shutil
import warnings

import pytest


ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")
pytest.importorskip("MDAnalysisTests", reason="the example data package")


def execute(name: str, workdir: pathlib.Path):
    """Run a copy of the notebook in `workdir` (it writes its stores there).

    A kernel killed by a signal runs the notebook once more, from an empty `workdir`,
    and says so in a warning: jax-finufft's CPU engine has crashed a process twice in
    some twenty CI runs, never twice in a row, and never reproduced in 70 local runs of
    the same cell. A second death, or any other failure, fails the test."""
    for attempt in (1, 2):
        notebook, died = _run(name, workdir)
        if died is None:
            return notebook
        if attempt == 2 or "killed by" not in died:
            pytest.fail(f"{name}: {died}; its stderr is above")
        warnings.warn(f"{name}: {died}; running it once more", RuntimeWarning)
        shutil.rmtree(workdir)
        workdir.mkdir()


def _run(name: str, workdir: pathlib.Path):
    """`(executed notebook, None)`, or `(notebook, how the kernel died)`."""
    from jupyter_client.manager import AsyncKernelManager
    from jupyter_core.utils import run_sync

    path = workdir / name
    shutil.copy(NOTEBOOKS / name, path)
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = []
    # The kernel imports this checkout's package, installed or not. A native crash in it
    # prints the Python stack of every thread (faulthandler) to the captured stderr.
    env = dict(os.environ, PYTHONFAULTHANDLER="1", PYTHONPATH=os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    # Our own kernel manager: it outlives a dead kernel, so the failure can say how the
    # kernel ended (a signal: a native crash or the out-of-memory killer).
    km = AsyncKernelManager(kernel_name="python3")
    client = nbclient.NotebookClient(
        notebook, km=km, timeout=600, resources={"metadata": {"path": str(workdir)}},
    )
    started: list = []
    client.on_cell_execute = lambda cell, cell_index: started.append(cell_index)
    try:
        client.execute(env=env)  # raises CellExecutionError on the first failing cell
    except nbclient.exceptions.DeadKernelError:
        cell = started[-1] if started else "none yet"
        return notebook, f"the kernel died in cell {cell} ({_how_it_ended(km)})"
    finally:
        if km.has_kernel:
            run_sync(km.shutdown_kernel)(now=True)
    return notebook, None


def _how_it_ended(km) -> str:
    process = getattr(km.provisioner, "process", None)
    code = None if process is None else process.poll()
    if code is None:
        return "exit status unknown"
    if code < 0:
        import signal

        return f"killed by {signal.Signals(-code).name}"
    return f"exit status {code}"


def check_outputs(notebook):
    """No error output; every cell that shows a figure has an image; the stdout text."""
    text = []
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        kinds = [o.output_type for o in cell.outputs]
        assert "error" not in kinds, cell.source
        if "plt.show()" in cell.source:
            assert any("image/png" in o.get("data", {}) for o in cell.outputs), (
                f"no figure from:\n{cell.source}")
        text += [o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stdout"]
    return "".join(text)


def test_committed_notebooks_are_executed():
    """The repository's copies carry their outputs (people read them on the web)."""
    for name in ("quickstart.ipynb", "ensemble_study.ipynb", "at_scale.ipynb"):
        notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
        code = [c for c in notebook.cells if c.cell_type == "code"]
        assert all(c.execution_count for c in code), f"{name}: not executed"
        check_outputs(notebook)


def test_quickstart(tmp_path):
    out = check_outputs(execute("quickstart.ipynb", tmp_path))
    # The integral of the map is the sum of the atoms' f(0): a physical invariant.
    integral, expected = map(float, re.search(
        r"integral ([\d.]+) A, sum of f\(0\) ([\d.]+) A", out).groups())
    assert abs(integral - expected) <= 1e-3 * expected
    # The analytic projection equals the voxel sum along z.
    assert float(re.search(r"summed along z: relative L2 (\S+)", out).group(1)) < 1e-4
    # Real and Fourier routes agree once atoms are blurred below Nyquist.
    assert float(re.search(r"exact voxel averages: (\S+)", out).group(1)) < 2e-3


def test_ensemble_study(tmp_path):
    import xarray as xr

    out = check_outputs(execute("ensemble_study.ipynb", tmp_path))
    stack = xr.open_zarr(tmp_path / "adk_dims.zarr")
    assert stack.potential.shape == (98, 48, 48, 48)
    assert bool(stack.rendered.all())
    # The closed -> open hand-over happens inside the trajectory, not at its ends.
    crossing = int(re.search(r"closed from frame (\d+) on", out).group(1))
    assert 10 < crossing < 88


def test_at_scale(tmp_path):
    pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    out = check_outputs(execute("at_scale.ipynb", tmp_path))
    assert "rendered 2 of 2 conformations into s3://" in out
    # Two conformations, each written as two z-slab shards (one object each).
    assert "potential shards in the bucket: 4" in out
    # Physical check: the water fills the simulation cell, whose height along z the
    # file's CRYST1 gives (within a voxel at each face).
    width, height = map(float, re.search(
        r"water fills ([\d.]+) A along z; the cell's height along z \(CRYST1\): ([\d.]+) A",
        out).groups())
    assert abs(width - height) <= 2.0
    assert "local S3 endpoint stopped: True" in out
