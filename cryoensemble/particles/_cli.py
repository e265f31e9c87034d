"""The `images` command (wired into `cryoensemble.cli` by `add_parsers`)."""

import argparse
import os
import sys
import time


def _range(text: str) -> tuple[float, float] | float:
    """`MIN:MAX` or a single number."""
    try:
        parts = [float(p) for p in text.split(":")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        return parts[0]
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected a number or MIN:MAX; got {text!r}")
    return parts[0], parts[1]


def _snr(text: str) -> float | None:
    if text.lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--snr: expected a number or 'none'; got {text!r}") from None


def _read_array(path: str, what: str):
    import numpy as np

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} {path}: no such file")
    try:
        return np.load(path) if path.endswith(".npy") else np.loadtxt(path, ndmin=1, delimiter=None)
    except ValueError as error:
        raise ValueError(f"{what} {path}: {error}") from None


def _potential_store(inputs: list[str], options: dict):
    """The location of a potential store given as the only input, else None."""
    from ..store import as_location, read_parameters

    if len(inputs) != 1 or ("://" not in inputs[0] and not os.path.isdir(inputs[0])):
        return None
    location = as_location(inputs[0], options)
    parameters = read_parameters(location)
    return location if parameters is not None and "n_conformations" in parameters else None


def _images(args) -> int:
    from ..cli import make_source, storage_options
    from ..sources import StructureFilesSource
    from ._labels import CTFDistribution
    from ._simulate import simulate_images

    options = storage_options(args)
    # A potential store (a path or URL) is imaged by Fourier slice; else atoms.
    location = _potential_store(args.inputs, options)
    stored = location is not None
    source = location if stored else make_source(args)
    weights = None
    if args.weights is not None and (stored or not isinstance(source, StructureFilesSource)):
        weights = _read_array(args.weights, "--weights")
    poses = None if args.pose == "uniform" else _read_array(args.pose, "--pose")
    ctf = None if args.no_ctf else CTFDistribution(
        defocus_in_angstroms=args.defocus, astigmatism_in_angstroms=args.astigmatism,
        spherical_aberration_in_mm=args.cs, amplitude_contrast_ratio=args.amplitude_contrast,
        phase_shift=args.phase_shift, b_factor=args.b_envelope,
    )
    start = time.perf_counter()
    dataset = simulate_images(
        source, n_images=args.n_images, box=args.box, pixel_size=args.pixel_size, poses=poses,
        ctf=ctf, snr=args.snr, seed=args.seed, store=args.out,
        voltage_in_kilovolts=args.voltage, weights=weights, shift_sigma=args.shift_sigma,
        dtype=args.dtype, images_per_chunk=args.batch_size, overwrite=args.overwrite,
        projection=args.projection, extra_b_factor=args.b_factor,
        scheduler_address=args.scheduler_address, gpus=args.gpus, n_workers=args.workers,
        progress=not args.quiet, storage_options=options,
    )
    elapsed = time.perf_counter() - start
    done = int(dataset["rendered"].sum())
    print(f"{args.out}: {dataset.sizes['particle']} particles {args.box}x{args.box} @ "
          f"{args.pixel_size} A ({done} / {dataset.sizes['chunk']} chunks done) in {elapsed:.1f} s")
    return 0


def _verify_particles(args) -> int:
    """`verify` of a particle store: markers, shards and checksums; `--repair` renders
    the bad and missing chunks again from their stored labels."""
    from ..cli import source_from_parameters, storage_options
    from ..store import read_parameters, verify_store
    from ._simulate import repair_particles

    location = _particle_store(args.store, storage_options(args))
    report = verify_store(location)
    print(report.summary())
    if args.sample:
        print("verify: --sample applies to potential stores; every particle chunk's "
              "checksum was read", file=sys.stderr)
    if args.repair and not report.ok:
        parameters = read_parameters(location)
        description = parameters["source"]
        source = (description["path"] if description.get("kind") == "potential-store"
                  else source_from_parameters(parameters))
        chunks = sorted(set(report.bad) | set(report.not_rendered))
        print(f"repair: rendering {len(chunks)} chunk(s) again", flush=True)
        repair_particles(location, source, chunks, n_workers=args.workers)
        report = verify_store(location)
        print(report.summary())
    return 0 if report.ok else 1


def _particle_store(store: str, options: dict):
    """The location of a particle store, or None (a potential store, or nothing)."""
    from ..store import ImageStackLayout, as_location, layout_from_parameters, read_parameters

    location = as_location(store, options)
    location.check()
    parameters = read_parameters(location)
    if parameters is None or not isinstance(layout_from_parameters(parameters), ImageStackLayout):
        return None
    return location


def _add_source_arguments(parser) -> None:
    # The same inputs as `render` (cryoensemble.cli.make_source reads them).
    parser.add_argument("inputs", nargs="+", metavar="INPUT")
    parser.add_argument("--topology", help="topology for trajectory inputs (PSF, PDB, GRO, ...)")
    parser.add_argument("--frames", help="START:STOP:STEP of trajectory frames")
    parser.add_argument("--select", default="all", help="MDAnalysis atom selection")
    parser.add_argument("--exclude", metavar="ELEMENTS|SELECTION",
                        help="drop atoms: element symbols (X,QQ) or an MDAnalysis selection")
    parser.add_argument("--morph", type=int, metavar="N", help="morph two inputs in N steps")
    parser.add_argument("--weights", help="conformation weights: CSV of file,weight for "
                        "structure files, else one number per conformation (.txt or .npy)")


def add_parsers(subparsers) -> None:
    """Add `images` to the `cryoensemble` command's subparsers (and let its `verify`
    check particle stores)."""
    from ..cli import parse_storage_option

    images = subparsers.add_parser(
        "images", help="simulate a labelled particle-image dataset from an ensemble",
        description="Particles drawn by conformation weight, uniform (or given) poses, "
        "CTF and white noise, into a resumable zarr store. INPUT: structures or "
        "trajectories as for `render` (exact projections of the atoms), or one potential "
        "store made by `render` (its volumes by Fourier slice).",
    )
    _add_source_arguments(images)
    images.add_argument("--out", required=True,
                        help="zarr store: a path or URL (s3://bucket/p.zarr, gs://, file://)")
    images.add_argument("--n-images", type=int, required=True)
    images.add_argument("--box", type=int, required=True, help="image size, pixels")
    images.add_argument("--pixel-size", type=float, required=True, help="A")
    images.add_argument("--defocus", type=_range, default=(10000.0, 25000.0),
                        help="mean defocus MIN:MAX (or one value), A (default 10000:25000)")
    images.add_argument("--astigmatism", type=_range, default=0.0,
                        help="defocus U - V, MIN:MAX or one value, A (default 0)")
    images.add_argument("--voltage", type=float, default=300.0, help="kV")
    images.add_argument("--cs", type=float, default=2.7, help="spherical aberration, mm")
    images.add_argument("--amplitude-contrast", type=float, default=0.1)
    images.add_argument("--phase-shift", type=float, default=0.0, help="degrees")
    images.add_argument("--b-envelope", type=_range, default=0.0,
                        help="CTF B-factor envelope exp(-B k^2/4), A^2 (MIN:MAX or one value)")
    images.add_argument("--no-ctf", action="store_true", help="no CTF (phase-shift images)")
    images.add_argument("--snr", type=_snr, default=0.1, help="signal-to-noise ratio, or 'none'")
    images.add_argument("--pose", default="uniform",
                        help="'uniform', or a file of N quaternions w x y z (.txt or .npy)")
    images.add_argument("--shift-sigma", type=float, default=0.0, help="in-plane shifts, A")
    images.add_argument("--seed", type=int, default=0)
    images.add_argument("--b-factor", type=float, default=0.0, help="extra B for every atom, A^2")
    images.add_argument("--projection", choices=["fourier-linear", "fourier-spline"],
                        default="fourier-linear", help="for a potential store input")
    images.add_argument("--dtype", choices=["float32", "float16"], default="float32")
    images.add_argument("--batch-size", type=int, help="particles per chunk and task (default 512)")
    images.add_argument("--scheduler-address", help="an existing Dask scheduler")
    images.add_argument("--gpus", type=int, help="GPU workers (as for render)")
    images.add_argument("--workers", type=int, help="CPU worker processes (default: cores)")
    images.add_argument("--overwrite", action="store_true", help="replace a store made otherwise")
    images.add_argument("--quiet", action="store_true", help="no progress bar")
    images.add_argument("--storage-option", type=parse_storage_option, action="append",
                        metavar="KEY=VALUE", help="fsspec storage option (repeatable), "
                        "e.g. endpoint_url=...")
    images.set_defaults(run=_images)


    # `verify` (defined by cryoensemble.cli) checks particle stores too: its command
    # dispatches on the store's kind.
    verify = subparsers.choices.get("verify")
    if verify is not None:
        verify_potential = verify.get_default("run")

        def run_verify(args) -> int:
            from ..cli import storage_options

            if _particle_store(args.store, storage_options(args)) is not None:
                return _verify_particles(args)
            return verify_potential(args)

        verify.set_defaults(run=run_verify)


def main(argv=None) -> int:
    """Run `images` alone."""
    from ..cli import exit_code_and_message

    parser = argparse.ArgumentParser(prog="cryoensemble")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (Exception, KeyboardInterrupt) as error:  # noqa: BLE001 - one line, one exit code
        code, line = exit_code_and_message(error)
        print(f"cryoensemble: {line}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
