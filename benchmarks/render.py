"""Benchmark: rendering one volume of an atomic model, cryoensemble against its peers.

What it measures
----------------
For each case, the wall time of rendering ONE voxel map of the electrostatic potential
(Peng 1996 five-gaussian parameters, no extra B-factor, float32, 1 A voxels):

- ``adk``:      AdK closed (adk_closed.pdb), 3,341 atoms, 96^3 grid.
- ``solvated``: AdK in TIP4P water (adk_oplsaa.pdb), all 47,681 atom records, 128^3.
                `cryoensemble.io.read_atomic_model` drops the 11,084 massless TIP4P
                sites (atom name MW); here they are kept and given the element O, so the
                atom set matches the 47,681 records the peers in ANCHORS.md rendered.
- ``tiled``:    the solvated box tiled 2x3x4 with the lattice vectors of its CRYST1
                record (1,144,344 atoms), 256^3. Heavy; only with ``--cases ...,tiled``.

Positions are centred on their mean. Voxel i of an axis of length n sits at
(i - n // 2) * voxel_size (the cryojax / cryoensemble convention).

Methods (each skipped with a note if its package cannot be imported):

- ``cryoensemble``: `GaussianMixtureRenderFn` (exact voxel averages on a local K^3 window
  per atom), called as cryojax users do, `jax.jit(lambda v: render(v))(volume)`; the
  support plan is sized on the first call from the concrete volume (which holds it), so
  the jitted function keeps the local path; that sizing is part of the first call.
- ``cryojax dense``: cryojax 0.6.0 `GaussianMixtureRenderFn(shape, voxel_size)`, every
  atom on every voxel (``adk`` only: it is slow).
- ``cryojax spread``: cryojax 0.6.0 `GaussianMixtureRenderFn(shape, voxel_size,
  n_spread=(...))`, one spreading width per Peng component, at (2,2,4,4,7) and
  (3,3,5,5,9).
- ``gemmi``: gemmi `DensityCalculatorE` (C++, single thread, Peng/c4322 table) on a P1
  cell of shape * voxel_size. It POINT-SAMPLES the potential at grid nodes instead of
  averaging it over voxels, so its "error" against the voxel-average reference measures
  that difference, not a bug. Timed: `put_model_density_on_grid` + copying the grid out.

Timing: one warm-up call (reported as "first call", compile included for JAX methods;
for cryoensemble it starts from a fresh volume, so sizing its support plan is in it), then
the median of ``--repeats`` calls, timed in 5 rounds that visit every method of the case
in turn; JAX results are `block_until_ready`-ed. ``--first-call`` instead times each stage
of cryoensemble's first call (sizing, trace, lower, compile, execute) in this process,
then a first and a second call of a new render function without jit (as in a notebook).
The last column is time(cryojax spread (3,3,5,5,9)) / time(method): > 1 is faster.

Accuracy: relative L2 error against a float64 reference rendered by cryoensemble with
``truncation=1e-12`` in a separate process with JAX x64 on (the timings run without x64).
The reference renders the float32-rounded positions, so the error is that of the
renderer, not of storing positions in float32. ``--no-reference`` skips it ('-').

Run from the repository root::

    python benchmarks/render.py                        # adk, solvated; 5 repeats
    python benchmarks/render.py --cases adk --repeats 2
    python benchmarks/render.py --cases adk,solvated,tiled --no-reference --json out.json
    python benchmarks/render.py --cases adk,solvated,tiled --methods "cryoensemble,(3,3,5,5,9)"
    python benchmarks/render.py --cases tiled --first-call   # stages of the first call

It runs unchanged on CPU or GPU: JAX picks the default device.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.metadata
import json
import math
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time
from typing import Callable

import numpy as np

from _common import DATA, cpu_name, relative_l2


REPO = pathlib.Path(__file__).resolve().parents[1]
VOXEL_SIZE = 1.0
SPREAD_WIDTHS = ((2, 2, 4, 4, 7), (3, 3, 5, 5, 9))
BASELINE = "cryojax spread (3,3,5,5,9)"
ALL_CASES = ("adk", "solvated", "tiled")
TILES = (2, 3, 4)  # along the a, b, c lattice vectors of the solvated box


# --------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class Case:
    name: str
    shape: tuple[int, int, int]
    positions: np.ndarray  # (n, 3) float32, centred, x y z in A
    atomic_numbers: np.ndarray  # (n,) int
    notes: list[str]

    @property
    def n_atoms(self) -> int:
        return self.positions.shape[0]


def default_data_dir() -> pathlib.Path:
    return DATA


def read_all_records(path: pathlib.Path) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """Every atom record of the first model, massless virtual sites included (as O).

    Elements are inferred as `cryoensemble.io.read_atomic_model` does for MD files (the
    file has no element column); the sites it drops (TIP4P `MW`) get oxygen.

    Returns positions (n, 3) float64, atomic numbers, the number of virtual sites, and
    the lattice vectors of the CRYST1 cell as columns of a 3x3 matrix.
    """
    import gemmi
    from cryoensemble.io.structures import infer_element

    structure = gemmi.read_structure(str(path))
    positions, elements, n_virtual = [], [], 0
    for chain in structure[0]:
        for residue in chain:
            for atom in residue:
                element = infer_element(atom.name, residue.name)
                if element is None:
                    element, n_virtual = "O", n_virtual + 1
                positions.append(atom.pos.tolist())
                elements.append(element)
    numbers = {e: gemmi.Element(e).atomic_number for e in set(elements)}
    atomic_numbers = np.array([numbers[e] for e in elements], dtype=np.int64)
    lattice = np.array(structure.cell.orth.mat, dtype=np.float64)
    return np.asarray(positions, dtype=np.float64), atomic_numbers, n_virtual, lattice


def centred32(positions: np.ndarray) -> np.ndarray:
    return (positions - positions.mean(axis=0)).astype(np.float32)


def load_cases(names: list[str], data_dir: pathlib.Path) -> list[Case]:
    from cryoensemble.io import read_atomic_model

    cases = []
    if "adk" in names:
        model = read_atomic_model(data_dir / "adk_closed.pdb", model_index=0)
        cases.append(
            Case("adk", (96, 96, 96), centred32(model.positions[0]),
                 model.atomic_numbers, ["adk: adk_closed.pdb via cryoensemble.io"])
        )
    if "solvated" in names or "tiled" in names:
        positions, numbers, n_virtual, lattice = read_all_records(data_dir / "adk_oplsaa.pdb")
        note = (f"all {len(positions):,} records of adk_oplsaa.pdb; the {n_virtual:,} "
                "TIP4P virtual sites (MW) rendered as O for a like-for-like atom count")
        if "solvated" in names:
            cases.append(
                Case("solvated", (128, 128, 128), centred32(positions), numbers,
                     [f"solvated: {note}"])
            )
        if "tiled" in names:
            offsets = np.array(
                [lattice @ np.array([i, j, k]) for i in range(TILES[0])
                 for j in range(TILES[1]) for k in range(TILES[2])]
            )
            tiled = (positions[None] + offsets[:, None]).reshape(-1, 3)
            tiled = centred32(tiled)
            inside = np.mean(np.all(np.abs(tiled) < 128 * VOXEL_SIZE, axis=1))
            cases.append(
                Case("tiled", (256, 256, 256), tiled, np.tile(numbers, len(offsets)),
                     [f"tiled: solvated box x {TILES} along its CRYST1 lattice vectors; "
                      f"{inside:.0%} of the atoms lie inside the 256^3 grid (cryojax "
                      "and gemmi wrap the rest periodically, cryoensemble and the reference "
                      "clip them, so here their errors measure the wrap, not accuracy)"])
            )
    order = {name: i for i, name in enumerate(ALL_CASES)}
    return sorted(cases, key=lambda case: order[case.name])


# --------------------------------------------------------------------------------------
# Float64 reference (separate process: x64 must stay off for the timed methods)
# --------------------------------------------------------------------------------------


def blocks_n_batches(n_atoms: int, values_per_atom: int, bytes_per_value: int,
                     budget_gb: float) -> int:
    """Atom batches so that n_atoms / n_batches atoms' blocks fit in `budget_gb`."""
    total = n_atoms * values_per_atom * bytes_per_value
    return max(1, min(n_atoms, math.ceil(total / (budget_gb * 2**30))))


def reference_worker(directory: str) -> None:
    """Render `inputs.npz` in float64 and save `reference.npy` (run in a subprocess)."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from cryoensemble.constants import PengScatteringFactorParameters
    from cryoensemble.simulator import GaussianMixtureRenderFn, GaussianMixtureVolume

    inputs = np.load(os.path.join(directory, "inputs.npz"))
    shape = tuple(int(s) for s in inputs["shape"])
    positions = jnp.asarray(inputs["positions"].astype(np.float64))
    volume = GaussianMixtureVolume.from_tabulated_parameters(
        positions, PengScatteringFactorParameters(inputs["atomic_numbers"])
    )
    render = GaussianMixtureRenderFn(shape, VOXEL_SIZE, truncation=1e-12)
    radius = render.support_radius_for(volume)
    k = math.ceil(2 * radius / VOXEL_SIZE) + 1
    n_batches = blocks_n_batches(volume.positions.shape[0], k**3, 8,
                                 float(inputs["budget_gb"]))
    render = GaussianMixtureRenderFn(shape, VOXEL_SIZE, truncation=1e-12,
                                     batch_options={"n_batches": n_batches})
    start = time.perf_counter()
    reference = np.asarray(render(volume))
    assert reference.dtype == np.float64
    np.save(os.path.join(directory, "reference.npy"), reference)
    info = {"seconds": time.perf_counter() - start, "radius": radius, "n_batches": n_batches}
    with open(os.path.join(directory, "reference.json"), "w") as handle:
        json.dump(info, handle)


def compute_reference(case: Case, budget_gb: float) -> tuple[np.ndarray, dict]:
    with tempfile.TemporaryDirectory(prefix="render-bench-") as directory:
        np.savez(os.path.join(directory, "inputs.npz"), positions=case.positions,
                 atomic_numbers=case.atomic_numbers, shape=np.array(case.shape),
                 budget_gb=budget_gb)
        env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")
        subprocess.run([sys.executable, __file__, "--reference-worker", directory],
                       check=True, env=env)
        reference = np.load(os.path.join(directory, "reference.npy"))
        with open(os.path.join(directory, "reference.json")) as handle:
            return reference, json.load(handle)


# --------------------------------------------------------------------------------------
# Methods: each returns a zero-argument callable that renders once and returns the
# volume as something np.asarray accepts, ready (blocked) when it returns.
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class Result:
    case: str
    method: str
    median_ms: float | None = None
    first_s: float | None = None
    rel_error: float | None = None
    ratio: float | None = None
    note: str = ""


def setup_cryoensemble(case: Case, notes: list[str]) -> Callable:
    import jax
    import jax.numpy as jnp
    from cryoensemble.constants import PengScatteringFactorParameters
    from cryoensemble.simulator import GaussianMixtureRenderFn, GaussianMixtureVolume

    volume = GaussianMixtureVolume.from_tabulated_parameters(
        jnp.asarray(case.positions), PengScatteringFactorParameters(case.atomic_numbers)
    )
    # As a cryojax user writes it; the volume, built outside jit, holds its support plan
    # (atoms grouped by window size, so a few wide ions do not widen every window), sized
    # on the first call, which is timed with it (as a user sees it).
    render = GaussianMixtureRenderFn(case.shape, VOXEL_SIZE)
    f = jax.jit(lambda v: render(v))

    def run():
        out = f(volume).block_until_ready()
        if not any(note.startswith(f"{case.name}: cryoensemble support") for note in notes):
            plan = render.plan_for(volume)  # sized by the call above: cached
            windows = ", ".join(f"{n:,} atoms K={w}" for n, _, w in plan.groups)
            notes.append(f"{case.name}: cryoensemble support up to {plan.radius:.2f} A by "
                         f"window size ({windows}), scatter '{render.scatter}'")
        return out

    return run


def first_call_stages(case: Case) -> dict:
    """Seconds of each stage of cryoensemble's first call on a fresh volume: building the
    volume, sizing its support plan (host), tracing, lowering, compiling, the first
    execution, and a second (warm) execution. Run first in a fresh process, so that only
    JAX's own start (timed apart, as 'backend') precedes it."""
    import jax
    import jax.numpy as jnp

    stages = {}
    start = time.perf_counter()
    jnp.zeros(8).block_until_ready()
    stages["backend"] = time.perf_counter() - start
    from cryoensemble.constants import PengScatteringFactorParameters
    from cryoensemble.simulator import GaussianMixtureRenderFn, GaussianMixtureVolume

    def stage(name, fn):
        start = time.perf_counter()
        out = fn()
        stages[name] = time.perf_counter() - start
        return out

    volume = stage("volume", lambda: GaussianMixtureVolume.from_tabulated_parameters(
        jnp.asarray(case.positions), PengScatteringFactorParameters(case.atomic_numbers)))
    render = GaussianMixtureRenderFn(case.shape, VOXEL_SIZE)
    stage("sizing", lambda: render.plan_for(volume))
    f = jax.jit(lambda v: render(v))
    traced = stage("trace", lambda: f.trace(volume))
    lowered = stage("lower", traced.lower)
    compiled = stage("compile", lowered.compile)
    stage("execute", lambda: compiled(volume).block_until_ready())
    stages["first call"] = sum(v for k, v in stages.items() if k != "backend")
    stage("warm", lambda: compiled(volume).block_until_ready())
    # A notebook's call without jit (a new render function: its sizing is timed too).
    eager = GaussianMixtureRenderFn(case.shape, VOXEL_SIZE)
    stage("eager first call", lambda: eager(volume).block_until_ready())
    stage("eager warm", lambda: eager(volume).block_until_ready())
    return stages


def setup_cryojax(case: Case, n_spread, budget_gb: float, notes: list[str]) -> Callable:
    import jax
    import jax.numpy as jnp
    import cryojax.simulator as cxs
    from cryojax.constants import PengScatteringFactorParameters

    positions = jnp.asarray(case.positions)
    volume = cxs.GaussianMixtureVolume.from_tabulated_parameters(
        positions, PengScatteringFactorParameters(case.atomic_numbers)
    )
    amplitudes = jnp.asarray(volume.amplitudes, jnp.float32)
    variances = jnp.asarray(volume.variances, jnp.float32)
    if n_spread is None:
        n_batches = 1
    else:
        # The pure-JAX spread materialises a float32 weight and an int32 index per atom,
        # component and grid point of its n_spread^3 support.
        n_batches = blocks_n_batches(case.n_atoms, sum(n**3 for n in n_spread), 8, budget_gb)
        if n_batches > 1:
            notes.append(f"{case.name}: cryojax spread {n_spread} with n_batches={n_batches}")
    render = cxs.GaussianMixtureRenderFn(case.shape, VOXEL_SIZE, n_spread=n_spread,
                                         n_batches=n_batches)
    # Called as a cryojax user writes it, like cryoensemble above: the volume (built
    # outside jit, float32) is the argument.
    volume = cxs.GaussianMixtureVolume(positions, amplitudes, variances)
    f = jax.jit(lambda v: render(v))
    return lambda: f(volume).block_until_ready()


def setup_gemmi(case: Case, notes: list[str]) -> Callable:
    import gemmi

    # Gemmi's grid node (i, j, k) sits at (i, j, k) * spacing in a P1 cell starting at 0;
    # shifting by (n // 2) * voxel_size puts node i where our voxel i is.
    nz, ny, nx = case.shape
    shift = np.array([nx // 2, ny // 2, nz // 2], dtype=np.float64) * VOXEL_SIZE
    model = gemmi.Model(1)
    chain = gemmi.Chain("A")
    residue = gemmi.Residue()
    residue.name, residue.seqid = "UNK", gemmi.SeqId(1, " ")
    atom = gemmi.Atom()
    atom.occ, atom.b_iso = 1.0, 0.0
    elements = {int(z): gemmi.Element(int(z)) for z in np.unique(case.atomic_numbers)}
    for position, z in zip((case.positions.astype(np.float64) + shift).tolist(),
                           case.atomic_numbers.tolist()):
        atom.pos, atom.element = gemmi.Position(*position), elements[z]
        residue.add_atom(atom)
    chain.add_residue(residue)
    model.add_chain(chain)

    calculator = gemmi.DensityCalculatorE()
    calculator.d_min = 0.0  # keep the grid size we set (no resolution-driven sizing)
    calculator.grid.set_size(nx, ny, nz)
    calculator.grid.set_unit_cell(
        gemmi.UnitCell(nx * VOXEL_SIZE, ny * VOXEL_SIZE, nz * VOXEL_SIZE, 90, 90, 90)
    )
    calculator.grid.spacegroup = gemmi.find_spacegroup_by_name("P 1")
    if case.name == "adk":
        notes.append(f"gemmi: DensityCalculatorE, cutoff {calculator.cutoff:g} (density "
                     "units), single-threaded C++, point samples (not voxel averages); "
                     "timed: put_model_density_on_grid + grid copy")

    def run():
        calculator.put_model_density_on_grid(model)
        return np.array(calculator.grid, copy=True).transpose(2, 1, 0)  # [x,y,z] -> [z,y,x]

    return run


def point_sample_check(case: Case, volume, reference: np.ndarray, n_nodes: int = 64) -> float:
    """Largest relative deviation of gemmi's grid from exact float64 point samples.

    Evaluated directly (all atoms, no cutoff) at the `n_nodes` grid nodes where the
    reference is largest: there gemmi's error would show. Confirms that gemmi's large
    error against voxel averages comes from point sampling, not from a wrong grid.
    """
    import gemmi

    numbers, rows = np.unique(case.atomic_numbers, return_inverse=True)
    a = np.array([gemmi.Element(int(z)).c4322.a for z in numbers])[rows]
    b = np.array([gemmi.Element(int(z)).c4322.b for z in numbers])[rows]
    variance = b / (8 * np.pi**2)
    norm = a * (2 * np.pi * variance) ** -1.5
    positions = case.positions.astype(np.float64)
    centre = np.array(case.shape) // 2
    worst = 0.0
    for flat in np.argsort(reference, axis=None)[-n_nodes:]:
        zyx = np.array(np.unravel_index(flat, case.shape))
        node = (zyx - centre)[::-1] * VOXEL_SIZE
        d2 = np.sum((positions - node) ** 2, axis=1)[:, None]
        exact = np.sum(norm * np.exp(-d2 / (2 * variance)))
        worst = max(worst, abs(float(volume[tuple(zyx)]) - exact) / exact)
    return worst


ROUNDS = 5  # timed calls are spread over this many rounds through the methods


def first_call(run: Callable) -> tuple[float, np.ndarray]:
    """(seconds, output) of the first call: compilation included for JAX methods."""
    start = time.perf_counter()
    out = run()
    return time.perf_counter() - start, out


def interleaved_medians(runs: list[Callable], repeats: int) -> list[float]:
    """Median ms of `repeats` calls of each run, timed in rounds that visit every run in
    turn, so that drifts of the machine (clocks, other load) fall on all of them alike."""
    times = [[] for _ in runs]
    per_round = max(1, math.ceil(repeats / ROUNDS))
    while min(len(t) for t in times) < repeats:
        for run, spent in zip(runs, times):
            for _ in range(min(per_round, repeats - len(spent))):
                start = time.perf_counter()
                run()
                spent.append(time.perf_counter() - start)
    return [1e3 * float(np.median(t)) for t in times]


def rel_error(volume, reference: np.ndarray | None) -> float | None:
    return None if reference is None else relative_l2(volume, reference)


def method_setups(case: Case, budget_gb: float, notes: list[str], methods=None):
    """(label, setup thunk) for every method that applies to the case (those whose
    label contains one of `methods`, if given)."""
    return [(label, setup) for label, setup in _method_setups(case, budget_gb, notes)
            if not methods or any(m in label for m in methods)]


def _method_setups(case: Case, budget_gb: float, notes: list[str]):
    setups = [("cryoensemble", lambda: setup_cryoensemble(case, notes))]
    if case.name == "adk":
        setups.append(("cryojax dense", lambda: setup_cryojax(case, None, budget_gb, notes)))
    for widths in SPREAD_WIDTHS:
        label = "cryojax spread ({})".format(",".join(map(str, widths)))
        setups.append((label, lambda w=widths: setup_cryojax(case, w, budget_gb, notes)))
    setups.append(("gemmi DensityCalculatorE", lambda: setup_gemmi(case, notes)))
    return setups


def run_case(case: Case, reference, repeats: int, budget_gb: float,
             notes: list[str], methods=None) -> list[Result]:
    results, timed = [], []
    for label, setup in method_setups(case, budget_gb, notes, methods):
        result = Result(case.name, label)
        results.append(result)
        try:
            run = setup()
        except ImportError as error:
            result.note = f"skipped: not importable ({error})"
            progress(f"  {label}: {result.note}")
            continue
        result.first_s, out = first_call(run)
        result.rel_error = rel_error(out, reference)
        if label.startswith("gemmi") and reference is not None:
            notes.append(f"{case.name}: gemmi vs exact float64 point samples at the 64 "
                         f"nodes of largest potential: max rel. deviation "
                         f"{point_sample_check(case, out, reference):.1e} (its error above "
                         "is point sampling vs voxel averaging)")
        del out
        timed.append((result, run))
        progress(f"  {label}: first call {result.first_s:.2f} s")
    for (result, _), median in zip(timed, interleaved_medians([r for _, r in timed], repeats)):
        result.median_ms = median
        progress(f"  {result.method}: {median:.2f} ms")
    del timed
    baseline = next((r.median_ms for r in results if r.method == BASELINE and r.median_ms), None)
    for result in results:
        if baseline and result.median_ms:
            result.ratio = baseline / result.median_ms
    return results


# --------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        pass
    try:  # importable but not installed (e.g. a source checkout on PYTHONPATH)
        return str(getattr(importlib.import_module(package), "__version__", "unknown"))
    except ImportError:
        return "not installed"


def machine_info() -> dict:
    import jax

    cpu = cpu_name()
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "nproc": os.cpu_count(),
        "jax_devices": [str(device) for device in jax.devices()],
        "python": platform.python_version(),
        "versions": {p: version(p) for p in ("jax", "jaxlib", "cryoensemble", "cryojax",
                                             "gemmi", "numpy")},
    }


def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_report(info: dict, results: list[Result], notes: list[str], repeats: int) -> None:
    print(f"# render benchmark: one volume, float32, Peng (1996), 1 A voxels, "
          f"median of {repeats} after warm-up")
    print(f"# machine: {info['cpu']} | nproc {info['nproc']} | {info['platform']}")
    print(f"# jax devices: {', '.join(info['jax_devices'])}")
    print("# versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))
    header = ("case", "method", "median ms", "first call s", "rel. error",
              "x vs cryojax (3,3,5,5,9)")
    rows = [(r.case, r.method, fmt(r.median_ms, ".2f"), fmt(r.first_s, ".2f"),
             fmt(r.rel_error, ".1e"), fmt(r.ratio, ".2f") if not r.note else r.note)
            for r in results]
    widths = [max(len(str(row[i])) for row in rows + [header]) for i in range(len(header))]
    line = " | ".join(f"{{:{'<' if i < 2 else '>'}{w}}}" for i, w in enumerate(widths))
    print(line.format(*header))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(line.format(*row))
    print("notes:")
    for note in notes:
        print(f"- {note}")


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time single-volume rendering (cryoensemble vs cryojax 0.6.0 vs gemmi) "
                    "and print a table with accuracies against a float64 reference.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--cases", default="adk,solvated",
                        help=f"comma-separated cases among {','.join(ALL_CASES)}")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls after warm-up")
    parser.add_argument("--no-reference", action="store_true",
                        help="skip the float64 reference (errors print as '-')")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--data-dir", type=pathlib.Path, default=default_data_dir(),
                        help="folder holding adk_closed.pdb and adk_oplsaa.pdb")
    parser.add_argument("--batch-memory-gb", type=float, default=2.0,
                        help="memory for the per-atom blocks of one atom batch; sets "
                             "n_batches of cryoensemble and cryojax spread")
    parser.add_argument("--methods", default="",
                        help="comma-separated parts of method labels to run (e.g. "
                             "'cryoensemble,(3,3,5,5,9)'); default: all")
    parser.add_argument("--reference-dir", type=pathlib.Path,
                        help="keep the float64 references here (CASE.npy), reused if present")
    parser.add_argument("--first-call", action="store_true",
                        help="only time the stages of cryoensemble's first call on each case "
                             "(run it in a fresh process, one case)")
    parser.add_argument("--reference-worker", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.reference_worker:
        return args
    args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(args.cases) - set(ALL_CASES))
    if unknown or not args.cases:
        parser.error(f"--cases: unknown {unknown}; choose among {','.join(ALL_CASES)}")
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.reference_worker:
        reference_worker(args.reference_worker)
        return

    progress(f"loading {', '.join(args.cases)} from {args.data_dir}")
    cases = load_cases(args.cases, args.data_dir)
    notes = [note for case in cases for note in case.notes]
    if args.first_call:
        first = {}
        for case in cases:
            first[case.name] = stages = first_call_stages(case)
            print(f"# first call, {case.name} ({case.n_atoms:,} atoms, {case.shape}): "
                  + ", ".join(f"{k} {v:.3f} s" for k, v in stages.items()))
        if args.json:
            pathlib.Path(args.json).write_text(json.dumps(
                {"machine": machine_info(), "first_call": first}, indent=2) + "\n")
        return

    # References first: the timed process must not hold the accelerator's memory while
    # the x64 subprocess runs.
    references = {}
    if args.no_reference:
        notes.append("errors: skipped (--no-reference)")
    else:
        for case in cases:
            cached = args.reference_dir and args.reference_dir / f"{case.name}.npy"
            if cached and cached.exists():
                references[case.name] = np.load(cached)
                notes.append(f"{case.name}: float64 reference read from {cached}")
                continue
            progress(f"{case.name}: float64 reference ({case.n_atoms:,} atoms, {case.shape})")
            references[case.name], info = compute_reference(case, args.batch_memory_gb)
            if cached:
                cached.parent.mkdir(parents=True, exist_ok=True)
                np.save(cached, references[case.name])
            notes.append(f"{case.name}: float64 reference (cryoensemble, truncation 1e-12, "
                         f"radius {info['radius']:.2f} A, of the float32-rounded positions) "
                         f"in {info['seconds']:.1f} s")

    results = []
    for case in cases:
        progress(f"{case.name}: timing ({case.n_atoms:,} atoms, {case.shape})")
        results += run_case(case, references.pop(case.name, None), args.repeats,
                            args.batch_memory_gb, notes, args.methods)

    try:
        import cryojax.simulator as cxs
        import jax.numpy as jnp
        from cryojax.constants import PengScatteringFactorParameters

        for case in cases:
            volume = cxs.GaussianMixtureVolume.from_tabulated_parameters(
                jnp.asarray(case.positions), PengScatteringFactorParameters(case.atomic_numbers)
            )
            notes.append(f"{case.name}: cryojax.simulator.suggest_n_spread -> "
                         f"{cxs.suggest_n_spread(volume, VOXEL_SIZE)}")
    except ImportError:
        pass

    info = machine_info()
    print_report(info, results, notes, args.repeats)
    if args.json:
        payload = {"machine": info, "repeats": args.repeats, "voxel_size": VOXEL_SIZE,
                   "cases": {c.name: {"n_atoms": c.n_atoms, "shape": c.shape} for c in cases},
                   "results": [dataclasses.asdict(r) for r in results], "notes": notes}
        pathlib.Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
        progress(f"wrote {args.json}")


if __name__ == "__main__":
    main()
