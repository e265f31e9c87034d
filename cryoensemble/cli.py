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


def parse_storage_option(text: str) -> tuple[str, object]:
    """`KEY=VALUE` to a storage option; VALUE as JSON when it parses (numbers, true,
    {...}), else the string; a dotted KEY nests (`client_kwargs.region_name=eu-west-1`)."""
    import json

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--storage-option: expected KEY=VALUE; got {text!r}")
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = value
    return key, parsed


def storage_options(args) -> dict:
    options: dict = {}
    for key, value in getattr(args, "storage_option", None) or []:
        *parents, leaf = key.split(".")
        node = options
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return options


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
        storage_options=storage_options(args),
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

    from .store import as_location, open_store, read_parameters

    location = as_location(args.store, storage_options(args))
    location.check()
    if read_parameters(location) is None:
        raise ValueError(f"{args.store}: not a cryoensemble store")
    dataset = open_store(location)
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


def source_from_parameters(parameters: dict):
    """The ensemble source a store was rendered from, rebuilt from its parameters (for
    `verify --repair` and `--sample`)."""
    from .sources import (
        CycledSource,
        MorphSource,
        MultiModelSource,
        StructureFilesSource,
        TiledSource,
        TrajectorySource,
    )

    def build(description):
        kind = description.get("kind")
        selection = dict(description.get("selection") or {}) if kind != "trajectory" else {}
        if kind == "models":
            return MultiModelSource(description["path"], **selection)
        if kind == "files":
            return StructureFilesSource(description["paths"], weights=description["weights"],
                                        model_index=description["model_index"], **selection)
        if kind == "trajectory":
            return TrajectorySource(description["topology"], description["trajectories"],
                                    frames=description["frames"],
                                    selection=description["selection"])
        if kind == "morph":
            return MorphSource(*description["paths"], description["n"], **selection)
        if kind == "cycled":
            return CycledSource(build(description["source"]), description["n"])
        if kind == "tiled":
            return TiledSource(build(description["source"]), description["copies"],
                               description["box_vectors"])
        raise ValueError(f"a {kind!r} source cannot be rebuilt from the store; render it "
                         "again from Python with the same source")

    return build(parameters["source"])


def render_options_from_parameters(parameters: dict) -> dict:
    """`render_ensemble` keyword arguments that reproduce a store's parameters."""
    from .store import choose_z_chunk

    shape = tuple(parameters["shape"])
    renderer = parameters["renderer"]
    options = dict(shape=shape, voxel_size=parameters["voxel_size"], dtype=parameters["dtype"],
                   extra_b_factor=parameters["extra_b_factor"],
                   center=tuple(parameters["centre"]), renderer=renderer["name"])
    if renderer["name"] == "gaussian":
        options["truncation"] = renderer["truncation"]
    z_chunk = int(parameters["z_chunk"])
    if z_chunk != choose_z_chunk(shape, parameters["dtype"]):
        options["n_batches"] = -(-shape[0] // z_chunk)  # rendered in z-slabs
    return options


def _subset_source(source, indices: list[int]):
    """Chosen conformations of a source (for `verify --sample`: a fresh render of those).
    Defined here, not in `sources`, because only this check needs it; Dask ships it by
    value (cloudpickle)."""
    import numpy as np

    from .sources import AbstractEnsembleSource

    class SubsetSource(AbstractEnsembleSource):
        def __init__(self):
            self.atomic_numbers = source.atomic_numbers

        def __len__(self):
            return len(indices)

        def read(self, start, stop):
            return np.concatenate([source.read(i, i + 1) for i in indices[start:stop]])

        def labels(self):
            return {"index": np.asarray(indices, np.int64)}

        def mixture(self):
            return source.mixture()

        def input_files(self):
            return source.input_files()

        def description(self):
            return {"kind": "subset", "indices": indices, "source": source.description()}

    return SubsetSource()


def _verify(args) -> int:
    import tempfile

    import numpy as np

    from .distributed import config, render_ensemble
    from .store import (
        acquire_lease,
        as_location,
        forget_conformations,
        open_store,
        read_parameters,
        verify_store,
    )

    location = as_location(args.store, storage_options(args))
    location.check()
    report = verify_store(location)
    print(report.summary())
    parameters = read_parameters(location)
    if args.repair and not report.ok:
        source = source_from_parameters(parameters)
        options = render_options_from_parameters(parameters)
        with acquire_lease(location, config.lease_ttl_seconds()):
            forget_conformations(location, report.bad)
        print(f"repair: rendering {len(report.bad) + len(report.not_rendered)} conformation(s) "
              "again", flush=True)
        render_ensemble(source, store=location, n_workers=args.workers, **options)
        report = verify_store(location)
        print(report.summary())
    if args.sample and report.done:
        source = source_from_parameters(parameters)
        options = render_options_from_parameters(parameters)
        rng = np.random.default_rng()
        chosen = sorted(rng.choice(report.done, min(args.sample, len(report.done)), replace=False))
        stored = open_store(location)["potential"]
        with tempfile.TemporaryDirectory(prefix="cryoensemble-sample-") as scratch:
            fresh = render_ensemble(_subset_source(source, [int(i) for i in chosen]),
                                    store=f"{scratch}/sample.zarr", n_workers=args.workers,
                                    **options)["potential"].values
            for k, i in enumerate(chosen):
                a = stored[int(i)].values.astype(np.float64)
                b = fresh[k].astype(np.float64)
                report.sample[int(i)] = float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))
        report.sample_tolerance = 1e-3 if parameters["dtype"] == "float16" else 1e-6
        print(report.summary())
    return 0 if report.ok else 1


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
    render.add_argument("--out", required=True,
                        help="zarr store: a path or URL (s3://bucket/x.zarr, gs://, file://)")
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
    info.add_argument("store", help="a path or URL")
    info.set_defaults(run=_info)

    verify = commands.add_parser(
        "verify", help="check a store's metadata, markers and checksums",
        description="Exits 1 on any problem, naming the bad conformations.")
    verify.add_argument("store", help="a path or URL")
    verify.add_argument("--repair", action="store_true",
                        help="render exactly the bad or missing conformations again")
    verify.add_argument("--sample", type=int, default=0, metavar="K",
                        help="compare K random conformations against a fresh render")
    verify.add_argument("--workers", type=int, help="CPU worker processes for --repair/--sample")
    verify.set_defaults(run=_verify)
    for command in (render, info, verify):
        command.add_argument("--storage-option", type=parse_storage_option, action="append",
                             metavar="KEY=VALUE",
                             help="fsspec storage option (repeatable), e.g. endpoint_url=...")

    from .particles._cli import add_parsers as add_particle_parsers

    add_particle_parsers(commands)
    from ._export_cli import add_parser as add_export_parser

    add_export_parser(commands, parse_storage_option)
    return parser


def main(argv=None) -> int:
    from .errors import CryoEnsembleError

    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (CryoEnsembleError, ValueError, FileNotFoundError, FileExistsError, ImportError) as error:
        print(f"cryoensemble: {error}", file=sys.stderr)
        return 2
