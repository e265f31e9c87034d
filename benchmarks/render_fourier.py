"""Benchmark: the Fourier route (FFTAtomRenderFn) against the real-space one and cryojax.

What it measures
----------------
AdK closed (the 3,341 atoms of the golden file
../shared/reference/adk_closed_cubic96_1.0A_noB.npz, centred), a 96^3 grid of 1 A
voxels, Peng (1996) parameters, float32, at each extra B-factor of ``--b-factors``
(default 0 and 80 A^2). For each method: the first call (compile included), the median
of ``--repeats`` warm calls (each `block_until_ready`-ed; the renderers are called as
users call them: ours as `jax.jit(lambda v: render(v))(volume)`, cryojax's under
`eqx.filter_jit`), the time per call of ``--repeats`` calls issued back to back ("pipe": the device's time
where dispatch keeps ahead of it), and two relative L2 errors:

- ``vs exact``: against the float64 exact voxel averages (cryoensemble
  `GaussianMixtureRenderFn`, truncation 1e-12, JAX x64, in a subprocess). The Fourier
  route is band-limited, so at B = 0 it differs by ~30% by construction; at B = 80 by
  ~6e-4.
- ``vs series``: against the float64 band-limited Fourier series the Fourier methods
  compute (`FFTAtomRenderFn`, eps 1e-12, x64): the error of the NUFFT and of float32.

Methods (a method whose package cannot be imported is skipped with a note):

- ``gaussian mixture``: cryoensemble `GaussianMixtureRenderFn` (exact voxel averages).
- ``fft default (...)``: `FFTAtomRenderFn(shape, voxel_size)` as it is, naming the engine
  it picks on this device.
- ``fft finufft``, ``fft jax``: cryoensemble `FFTAtomRenderFn` with jax-finufft or the
  JAX-native NUFFT; default options (eps 1e-6; in float32 jax-finufft upsamples the
  fine grid by 2, the JAX engine by 1.5).
- ``... up 1.25``, ``... up 2``: the same with `opts={"upsampfac": ...}` (the JAX
  engine's own default is 1.5 in float32).
- ``cryojax nufftax``, ``cryojax finufft``: cryojax 0.6.0 `GaussianFourierRenderFn`
  (its default upsampling 1.25, eps 1e-6) with its default pure-JAX backend (nufftax)
  and with `CRYOJAX_FINUFFT_BACKEND=jax-finufft`; on a GPU also ``cryojax nufftax
  pallas`` (`NUFFTAX_PALLAS_BACKEND=1`, nufftax's fused Triton spreading). Each runs in
  its own process, as both read their variable at import.

Run from the repository root::

    python benchmarks/render_fourier.py
    python benchmarks/render_fourier.py --b-factors 80 --repeats 3 --json out.json
    python benchmarks/render_fourier.py --no-cryojax --no-reference
    python benchmarks/render_fourier.py --references /tmp/refs   # reuse them next run

It runs unchanged on CPU or GPU: JAX picks the default device (on a GPU without a CUDA
jax-finufft, the finufft rows are skipped and 'auto' would take the JAX engine).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

from _common import REFERENCE, relative_l2


REPO = pathlib.Path(__file__).resolve().parents[1]
SHAPE = (96, 96, 96)
VOXEL_SIZE = 1.0
GOLDEN_NAME = "adk_closed_cubic96_1.0A_noB.npz"


def default_golden() -> pathlib.Path:
    return REFERENCE / GOLDEN_NAME


def load_atoms(path: pathlib.Path) -> tuple[np.ndarray, np.ndarray]:
    data = np.load(path)
    positions = data["positions_xyz_angstrom"]
    return (positions - positions.mean(axis=0)).astype(np.float32), data["atomic_numbers"]


def by_element(positions: np.ndarray, numbers: np.ndarray):
    elements = np.unique(numbers)
    return tuple(positions[numbers == z] for z in elements), elements


def time_calls(fn, repeats: int) -> tuple[float, float, float, np.ndarray]:
    """(first call s, median warm call s, pipelined s per call, output).

    A warm call is timed alone (dispatch, device work, wait); pipelined is the median
    over 5 rounds of `repeats` calls issued back to back, waited for once: where the
    device is the limit, its time per call.
    """
    start = time.perf_counter()
    out = fn()
    out.block_until_ready()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn().block_until_ready()
        times.append(time.perf_counter() - start)
    rounds = []
    for _ in range(5):
        start = time.perf_counter()
        outs = [fn() for _ in range(repeats)]
        outs[-1].block_until_ready()
        rounds.append((time.perf_counter() - start) / repeats)
    return first, float(np.median(times)), float(np.median(rounds)), np.asarray(out)


# --------------------------------------------------------------------------------------
# Workers (subprocesses): float64 references and cryojax
# --------------------------------------------------------------------------------------


def worker(kind: str, b_factor: float, golden: pathlib.Path, out_dir: pathlib.Path, repeats: int):
    import jax

    if kind == "reference":
        jax.config.update("jax_enable_x64", True)
    sys.path.insert(0, str(REPO))
    positions, numbers = load_atoms(golden)
    result = {}
    if kind == "reference":
        from cryoensemble.constants import PengScatteringFactorParameters
        from cryoensemble.simulator import (
            FFTAtomRenderFn,
            GaussianMixtureRenderFn,
            GaussianMixtureVolume,
            IndependentAtomVolume,
        )

        # float32-rounded positions in float64: the errors are the renderers', not storage.
        exact = GaussianMixtureRenderFn(SHAPE, VOXEL_SIZE, truncation=1e-12)(
            GaussianMixtureVolume.from_tabulated_parameters(
                positions.astype(np.float64), PengScatteringFactorParameters(numbers), b_factor
            )
        )
        groups, elements = by_element(positions.astype(np.float64), numbers)
        series = FFTAtomRenderFn(SHAPE, VOXEL_SIZE, eps=1e-12)(
            IndependentAtomVolume.from_tabulated_parameters(
                groups, PengScatteringFactorParameters(elements), b_factor_by_element=b_factor
            )
        )
        np.save(out_dir / "exact.npy", np.asarray(exact))
        np.save(out_dir / "series.npy", np.asarray(series))
    else:
        import equinox as eqx
        import cryojax.simulator as cxs
        from cryojax.constants import PengScatteringFactorParameters

        groups, elements = by_element(positions, numbers)
        volume = cxs.GaussianFourierVolume.from_tabulated_parameters(
            groups, PengScatteringFactorParameters(elements), b_factor_by_element=b_factor
        )
        render = eqx.filter_jit(cxs.GaussianFourierRenderFn(SHAPE, VOXEL_SIZE))
        first, warm, pipelined, out = time_calls(lambda: render(volume), repeats)
        np.save(out_dir / "volume.npy", out)
        result = {"first": first, "warm": warm, "pipelined": pipelined}
    (out_dir / "result.json").write_text(json.dumps(result))


def run_worker(kind: str, b_factor: float, args, env_extra=None) -> tuple[dict, pathlib.Path] | str:
    directory = pathlib.Path(tempfile.mkdtemp(prefix=f"render_fourier_{kind}_"))
    env = dict(os.environ, **(env_extra or {}))
    command = [
        sys.executable, __file__, "--worker", kind, "--b-factors", str(b_factor),
        "--golden", str(args.golden), "--worker-dir", str(directory), "--repeats", str(args.repeats),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        return f"{kind} failed: {done.stderr.strip().splitlines()[-1] if done.stderr else done.returncode}"
    return json.loads((directory / "result.json").read_text()), directory


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--b-factors", default="0,80", help="extra B-factors in A^2, comma-separated")
    parser.add_argument("--repeats", type=int, default=5, help="warm calls timed per method")
    parser.add_argument("--golden", type=pathlib.Path, default=default_golden(), help="the AdK golden .npz")
    parser.add_argument("--no-cryojax", action="store_true", help="skip cryojax 0.6.0")
    parser.add_argument("--no-reference", action="store_true", help="skip the float64 references")
    parser.add_argument("--no-gaussian", action="store_true", help="skip the GaussianMixtureRenderFn row")
    parser.add_argument("--json", type=pathlib.Path, help="also write the rows here")
    parser.add_argument(
        "--references", type=pathlib.Path,
        help="a folder keeping the float64 references per B-factor: read if there, else computed and saved",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-dir", type=pathlib.Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    b_factors = [float(b) for b in args.b_factors.split(",")]
    if args.worker:
        worker(args.worker, b_factors[0], args.golden, args.worker_dir, args.repeats)
        return

    import jax

    sys.path.insert(0, str(REPO))
    from cryoensemble.constants import PengScatteringFactorParameters
    from cryoensemble.simulator import (
        FFTAtomRenderFn,
        GaussianMixtureRenderFn,
        GaussianMixtureVolume,
        IndependentAtomVolume,
    )
    import cryoensemble.ndimage.nufft as nufft

    positions, numbers = load_atoms(args.golden)
    groups, elements = by_element(positions, numbers)
    platform_name = jax.default_backend()
    print(f"# AdK {len(positions):,} atoms, {SHAPE} x {VOXEL_SIZE} A, float32 | JAX {jax.__version__} "
          f"on {jax.devices()[0].device_kind} ({platform_name}) | {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs")
    notes, rows = [], []
    for b_factor in b_factors:
        references = {}
        kept = args.references / f"B{b_factor:g}" if args.references else None
        if kept is not None and (kept / "series.npy").exists():
            references = {k: np.load(kept / f"{k}.npy") for k in ("exact", "series")}
        elif not args.no_reference:
            outcome = run_worker("reference", b_factor, args)
            if isinstance(outcome, str):
                notes.append(outcome)
            else:
                references = {k: np.load(outcome[1] / f"{k}.npy") for k in ("exact", "series")}
                if kept is not None:
                    kept.mkdir(parents=True, exist_ok=True)
                    for name, array in references.items():
                        np.save(kept / f"{name}.npy", array)
        mixture = GaussianMixtureVolume.from_tabulated_parameters(
            positions, PengScatteringFactorParameters(numbers), b_factor
        )
        atoms = IndependentAtomVolume.from_tabulated_parameters(
            groups, PengScatteringFactorParameters(elements), b_factor_by_element=b_factor
        )
        methods = {} if args.no_gaussian else {
            "gaussian mixture": (GaussianMixtureRenderFn(SHAPE, VOXEL_SIZE), mixture),
        }
        methods |= {
            # What `FFTAtomRenderFn(shape, voxel_size)` does on this device.
            f"fft default ({nufft.resolve_backend('auto', platform_name)})": (
                FFTAtomRenderFn(SHAPE, VOXEL_SIZE), atoms
            ),
        }
        for backend in ("finufft", "jax"):
            if backend == "finufft" and platform_name not in nufft.jax_finufft_platforms():
                notes.append(f"fft finufft skipped: jax-finufft does not run on {platform_name} here")
                continue
            methods[f"fft {backend}"] = (FFTAtomRenderFn(SHAPE, VOXEL_SIZE, backend=backend), atoms)
            for upsampfac in (1.25, 2.0) if backend == "jax" else (1.25,):
                methods[f"fft {backend} up {upsampfac:g}"] = (
                    FFTAtomRenderFn(SHAPE, VOXEL_SIZE, backend=backend, opts={"upsampfac": upsampfac}),
                    atoms,
                )
        outputs = {}
        for name, (render, volume) in methods.items():
            # Called as a cryojax user writes it: `jax.jit(lambda v: render(v))(volume)`.
            jitted = jax.jit(lambda v, render=render: render(v))
            outputs[name] = time_calls(lambda: jitted(volume), args.repeats)  # noqa: B023
        if not args.no_cryojax:
            cryojax_routes = (
                ("cryojax nufftax", {}),
                # nufftax's opt-in fused Triton spreading (GPU only).
                ("cryojax nufftax pallas", {"NUFFTAX_PALLAS_BACKEND": "1"}),
                ("cryojax finufft", {"CRYOJAX_FINUFFT_BACKEND": "jax-finufft"}),
            )
            for name, env in cryojax_routes:
                if "pallas" in name and platform_name != "gpu":
                    continue
                outcome = run_worker(name.replace(" ", "-"), b_factor, args, env)
                if isinstance(outcome, str):
                    notes.append(outcome)
                    continue
                result, directory = outcome
                outputs[name] = (
                    result["first"], result["warm"], result["pipelined"], np.load(directory / "volume.npy")
                )
        baseline = outputs["gaussian mixture"][1] if "gaussian mixture" in outputs else None
        for name, (first, warm, pipelined, out) in outputs.items():
            row = {
                "b_factor": b_factor, "method": name, "first_s": first, "warm_s": warm,
                "pipelined_s": pipelined,
                "vs_gaussian_mixture_time": warm / baseline if baseline else None,
                "error_vs_exact": relative_l2(out, references["exact"]) if references else None,
                "error_vs_series": relative_l2(out, references["series"]) if references else None,
            }
            rows.append(row)

    header = (f"{'B':>5} {'method':24} {'first s':>8} {'warm ms':>8} {'pipe ms':>8} {'x GMM':>6} "
              f"{'vs exact':>9} {'vs series':>9}")
    print(header)
    print("-" * len(header))
    for r in rows:
        fmt = lambda v: "-" if v is None else f"{v:.2e}"  # noqa: E731
        fmt_ratio = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        print(f"{r['b_factor']:5.0f} {r['method']:24} {r['first_s']:8.2f} {r['warm_s'] * 1e3:8.3f} "
              f"{r['pipelined_s'] * 1e3:8.3f} "
              f"{fmt_ratio(r['vs_gaussian_mixture_time']):>6} "
              f"{fmt(r['error_vs_exact']):>9} {fmt(r['error_vs_series']):>9}")
    for note in notes:
        print(f"# note: {note}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "notes": notes}, indent=1))


if __name__ == "__main__":
    main()
