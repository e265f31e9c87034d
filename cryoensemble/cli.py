"""The `cryoensemble` command line."""

import argparse
import os
import sys
import time


def parse_shape(text: str) -> tuple[int, int, int]:
    """`N` or `NZ,NY,NX` to a grid shape."""
    try:
        parts = [int(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shape: expected N or NZ,NY,NX; got {text!r}") from None
    if len(parts) == 1:
        parts *= 3
    if len(parts) != 3 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"--shape: expected N or NZ,NY,NX; got {text!r}")
    return tuple(parts)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number; got {text!r}")
    return value


def _volume(args) -> int:
    import numpy as np

    from .constants import PengScatteringFactorParameters
    from .io import read_atoms_from_pdb, write_volume_to_mrc
    from .simulator import GaussianMixtureRenderFn, GaussianMixtureVolume

    if os.path.exists(args.out) and not args.overwrite:
        print(f"cryoensemble: {args.out} exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    start = time.perf_counter()
    positions, atomic_numbers, b_factors = read_atoms_from_pdb(
        args.input, model_index=args.model, loads_b_factors=True
    )
    volume = GaussianMixtureVolume.from_tabulated_parameters(
        positions,
        PengScatteringFactorParameters(atomic_numbers),
        b_factors if args.b_factors else None,
    )
    render = GaussianMixtureRenderFn(args.shape, args.voxel_size)
    potential = np.asarray(render(volume))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    write_volume_to_mrc(potential, args.voxel_size, args.out, overwrite=args.overwrite)
    elapsed = time.perf_counter() - start
    integral = potential.sum() * args.voxel_size**3
    print(
        f"{args.input}: {len(atomic_numbers)} atoms -> {args.out} "
        f"{'x'.join(map(str, args.shape))} @ {args.voxel_size} A, "
        f"integral {integral:.1f} A, max {potential.max():.3f} A^-2, {elapsed:.2f} s"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cryoensemble", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    volume = commands.add_parser("volume", help="render one structure to an MRC file")
    volume.add_argument("input", help="PDB or mmCIF file (optionally .gz)")
    volume.add_argument("--out", required=True, help="output .mrc")
    volume.add_argument("--shape", type=parse_shape, required=True, help="N or NZ,NY,NX")
    volume.add_argument("--voxel-size", type=positive_float, required=True, help="A")
    volume.add_argument("--model", type=int, default=0, help="model index (0-based)")
    volume.add_argument("--b-factors", action="store_true", help="apply the file's B-factors")
    volume.add_argument("--overwrite", action="store_true")
    volume.set_defaults(run=_volume)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"cryoensemble: {error}", file=sys.stderr)
        return 2
