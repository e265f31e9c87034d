"""The `cryoensemble` command line."""

import argparse
import os
import sys
import time


def parse_shape(text: str) -> tuple[int, int, int]:
    """`N` or `NZ,NY,NX` to a grid shape."""
    from .coordinates import as_grid_shape

    try:
        return as_grid_shape(text, "--shape")
    except ValueError as error:  # argparse names the option itself
        raise argparse.ArgumentTypeError(str(error).split(": ", 1)[1]) from None


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
    from .io import atomic_model_to_mmdf, mmdf_to_atoms, read_atomic_model, write_volume_to_mrc
    from .simulator import GaussianMixtureRenderFn, GaussianMixtureVolume

    if os.path.exists(args.out) and not args.overwrite:
        print(f"cryoensemble: {args.out} exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    start = time.perf_counter()
    # --model is a 0-based index; read_atoms_from_pdb's model_index is a model number.
    positions, atomic_numbers, b_factors = mmdf_to_atoms(
        atomic_model_to_mmdf(read_atomic_model(args.input, model_index=args.model)),
        loads_b_factors=True,
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


def make_source(args):
    """The ensemble source the `render` inputs describe."""
    import glob

    from .io.structures import read_atomic_model
    from .sources import MorphSource, MultiModelSource, StructureFilesSource, TrajectorySource

    inputs = args.inputs
    if args.topology:
        return TrajectorySource(args.topology, inputs, frames=args.frames, selection=args.select)
    if args.frames:
        raise ValueError("--frames needs --topology (it selects trajectory frames)")
    if args.morph:
        if len(inputs) != 2:
            raise ValueError(f"--morph needs exactly two inputs (start, end); got {len(inputs)}")
        return MorphSource(inputs[0], inputs[1], args.morph)
    if len(inputs) == 1 and not glob.has_magic(inputs[0]) and args.weights is None:
        if read_atomic_model(inputs[0]).n_models > 1:
            return MultiModelSource(inputs[0])
    return StructureFilesSource(inputs, weights=args.weights)


def _render(args) -> int:
    from .distributed import render_ensemble

    source = make_source(args)
    kwargs = dict(
        shape=args.shape, voxel_size=args.voxel_size, store=args.out,
        scheduler_address=args.scheduler_address, gpus=args.gpus, n_workers=args.workers,
        batch_size=args.batch_size, n_batches=args.n_batches, split=args.split,
        dtype=args.dtype, extra_b_factor=args.b_factor, overwrite=args.overwrite,
        renderer=args.renderer,
    )
    if args.dry_run:
        print(render_ensemble(source, dry_run=True, **kwargs).summary())
        return 0
    start = time.perf_counter()
    dataset = render_ensemble(source, progress=not args.quiet, **kwargs)
    elapsed = time.perf_counter() - start
    n = dataset.sizes["conformation"]
    print(
        f"{args.out}: {n} conformations of {'x'.join(map(str, args.shape))} @ "
        f"{args.voxel_size} A ({int(dataset['rendered'].sum())} done) in {elapsed:.1f} s"
    )
    return 0


def _info(args) -> int:
    import json

    from .store import open_store, read_parameters

    if read_parameters(args.store) is None:
        raise ValueError(f"{args.store}: not a cryoensemble store")
    dataset = open_store(args.store)
    potential = dataset["potential"]
    done = int(dataset["rendered"].sum())
    print(f"{args.store}")
    print(f"  potential {dict(potential.sizes)} {potential.dtype}, chunks "
          f"{potential.encoding.get('chunks')}, {potential.attrs.get('units')}")
    print(f"  rendered  {done} / {dataset.sizes['conformation']}")
    labels = [name for name in dataset.coords if dataset[name].dims == ("conformation",)]
    print(f"  labels    {', '.join(labels)}")
    for key in ("voxel_size_angstrom", "renderer", "renderer_options", "scattering_table",
                "created"):
        print(f"  {key:<20}{dataset.attrs.get(key)}")
    print(f"  versions  {json.loads(dataset.attrs.get('versions', '{}'))}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .distributed import RENDERERS

    parser = argparse.ArgumentParser(prog="cryoensemble", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
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

    render = commands.add_parser(
        "render", help="render an ensemble into a zarr store with Dask",
        description="Inputs: a multi-model file; several structure files or globs; "
        "trajectories with --topology; or two structures with --morph N.",
    )
    render.add_argument("inputs", nargs="+", metavar="INPUT")
    render.add_argument("--out", required=True, help="zarr store directory")
    render.add_argument("--shape", type=parse_shape, required=True, help="N or NZ,NY,NX")
    render.add_argument("--voxel-size", type=positive_float, required=True, help="A")
    render.add_argument("--topology", help="topology for trajectory inputs (PSF, PDB, GRO, ...)")
    render.add_argument("--frames", help="START:STOP:STEP of trajectory frames")
    render.add_argument("--select", default="all", help="MDAnalysis atom selection")
    render.add_argument("--morph", type=int, metavar="N", help="morph two inputs in N steps")
    render.add_argument("--weights", help="CSV of file,weight for structure-file inputs")
    render.add_argument("--renderer", choices=list(RENDERERS), default="gaussian",
                        help="; ".join(f"{r.name}: {r.description}" for r in RENDERERS.values()))
    render.add_argument("--b-factor", type=float, default=0.0, help="extra B for every atom, A^2")
    render.add_argument("--batch-size", type=int, help="conformations per task (default: auto)")
    render.add_argument("--n-batches", type=int, default=1, help="split each volume's atoms")
    render.add_argument("--split", choices=["slabs", "atoms"], default="slabs")
    render.add_argument("--dtype", choices=["float32", "float16"], default="float32")
    render.add_argument("--scheduler-address", help="an existing Dask scheduler")
    render.add_argument("--gpus", type=int,
                        help="GPU workers: one process per core, cores divided among the GPUs")
    render.add_argument("--workers", type=int, help="CPU worker processes (default: cores)")
    render.add_argument("--overwrite", action="store_true", help="replace a store made otherwise")
    render.add_argument("--dry-run", action="store_true", help="print the plan only")
    render.add_argument("--quiet", action="store_true", help="no progress bar")
    render.set_defaults(run=_render)

    info = commands.add_parser("info", help="describe a store")
    info.add_argument("store")
    info.set_defaults(run=_info)

    from .particles._cli import add_parsers as add_particle_parsers

    add_particle_parsers(commands)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, FileExistsError, ImportError) as error:
        print(f"cryoensemble: {error}", file=sys.stderr)
        return 2
