"""The `cryoensemble` command line.

Exit codes: 0 success; 2 usage (options that do not parse or go together); 3 input (a
file, selection, store path or plan that cannot render); 4 infrastructure (scheduler,
workers, GPUs, disk); 130 interrupted (Ctrl-C; a store keeps what was written and the
same command resumes it); 1 an unexpected error (rerun with --debug for the traceback).
"""

import argparse
import errno
import logging
import math
import os
import sys
import time
import warnings

EXIT_USAGE, EXIT_INPUT, EXIT_INFRASTRUCTURE, EXIT_INTERRUPTED = 2, 3, 4, 130


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
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0; got {text!r}")
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


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number; got {text!r}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1; got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0; got {text!r}")
    return value


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1]; got {text!r}")
    return value


def selection_text(select: str | None, exclude: str | None) -> str | None:
    """One MDAnalysis selection from `--select` and `--exclude` (element symbols such as
    `X,QQ`, or a selection)."""
    select = None if select is None or select.strip() in ("", "all") else select.strip()
    if exclude:
        tokens = exclude.replace(",", " ").split()
        dropped = (f"element {' '.join(tokens)}"
                   if all(t.isalpha() and len(t) <= 2 for t in tokens) else exclude)
        return f"({select or 'all'}) and not ({dropped})"
    return select


# Options whose value may start with "-" (argparse would take `--frames -10:` for an option).
_DASH_VALUES = ("--frames",)


def _join_dash_values(argv: list[str]) -> list[str]:
    out, i = [], 0
    while i < len(argv):
        if argv[i] in _DASH_VALUES and i + 1 < len(argv) and argv[i + 1].startswith("-"):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def _check_output_file(path: str, overwrite: bool) -> None:
    """An output file that cannot be written, refused before any work."""
    from .errors import PlanError, UsageError

    if os.path.isdir(path):
        raise PlanError(f"--out {path}: is a directory; give a file name such as "
                        f"{os.path.join(path, 'volume.mrc')}")
    if os.path.exists(path) and not overwrite:
        raise UsageError(f"--out {path}: exists; pass --overwrite to replace it")
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        raise PlanError(f"--out {path}: {parent} is not a writable directory")


def _volume(args) -> int:
    import numpy as np

    from .constants import PengScatteringFactorParameters
    from .distributed import check_positions_in_box
    from .errors import PlanError
    from .io import bulk_centre, read_atomic_model, write_volume_to_mrc
    from .simulator import GaussianMixtureRenderFn, GaussianMixtureVolume

    _check_output_file(args.out, args.overwrite)
    start = time.perf_counter()
    model = read_atomic_model(args.input, model_index=args.model,
                              selection=selection_text(args.select, args.exclude))
    positions, atomic_numbers = model.positions[0], model.atomic_numbers
    if args.b_factors and not (np.all(np.isfinite(model.b_factors)) and model.b_factors.min() >= 0):
        raise PlanError(f"{args.input}: --b-factors: the file's B-factors include NaN or "
                        "negative values; drop --b-factors or fix the file")
    if not args.keep_frame:
        positions = positions - bulk_centre(positions)[0]
    parameters = PengScatteringFactorParameters(atomic_numbers)
    check_positions_in_box(positions, np.asarray(parameters.a).sum(axis=1), args.shape,
                           args.voxel_size, args.outside, args.outside_tolerance, args.input)
    volume = GaussianMixtureVolume.from_tabulated_parameters(
        positions, parameters, model.b_factors[0] if args.b_factors else None,
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


# Files MDAnalysis reads that gemmi does not: they need --topology.
_MD_ONLY = (".gro", ".pqr", ".psf", ".prmtop", ".parm7", ".tpr", ".top", ".data", ".lammpsdata",
            ".mol2", ".xyz", ".crd", ".dcd", ".xtc", ".trr", ".nc", ".netcdf", ".lammpstrj")


def make_source(args):
    """The ensemble source the `render` inputs describe."""
    import glob

    from .errors import UsageError
    from .io.structures import read_atomic_model
    from .sources import MorphSource, MultiModelSource, StructureFilesSource, TrajectorySource

    inputs = args.inputs
    selection = selection_text(args.select, args.exclude)
    if args.topology and args.morph is not None:
        raise UsageError("--morph takes two structure files, not trajectories (--topology)")
    if args.topology:
        return TrajectorySource(args.topology, inputs, frames=args.frames,
                                selection=selection or "all")
    if args.frames:
        raise UsageError("--frames needs --topology (it selects trajectory frames)")
    for path in inputs:
        if path.lower().endswith(_MD_ONLY):
            raise UsageError(
                f"{path}: read through MDAnalysis, not as a PDB/mmCIF model; pass a topology "
                f"with --topology (a coordinate file alone: --topology {path} {path})"
            )
    if args.morph is not None:
        if len(inputs) != 2:
            raise UsageError(f"--morph needs exactly two inputs (start, end); got {len(inputs)}")
        return MorphSource(inputs[0], inputs[1], args.morph, selection=selection)
    if len(inputs) == 1 and not glob.has_magic(inputs[0]) and args.weights is None:
        if read_atomic_model(inputs[0], selection=selection).n_models > 1:
            return MultiModelSource(inputs[0], selection=selection)
    return StructureFilesSource(inputs, weights=args.weights, selection=selection)


def _render(args) -> int:
    from .distributed import render_ensemble

    from .errors import UsageError
    from .sources import StructureFilesSource

    source = make_source(args)
    if args.weights is not None and not isinstance(source, StructureFilesSource):
        raise UsageError("--weights weighs structure-file inputs (one conformation per file); "
                         "not trajectories or morphs")
    kwargs = dict(
        shape=args.shape, voxel_size=args.voxel_size, store=args.out,
        storage_options=storage_options(args),
        scheduler_address=args.scheduler_address, gpus=args.gpus, n_workers=args.workers,
        batch_size=args.batch_size, n_batches=args.n_batches, split=args.split,
        dtype=args.dtype, extra_b_factor=args.b_factor, overwrite=args.overwrite,
        renderer=args.renderer, center=None if args.keep_frame else True,
        outside=args.outside, outside_tolerance=args.outside_tolerance,
        **_cluster_options(args),
    )
    if args.dry_run:
        print(render_ensemble(source, dry_run=True, **kwargs).summary())
        return 0
    start = time.perf_counter()
    with _store_note(args.out):
        dataset = render_ensemble(source, progress=not args.quiet, **kwargs)
    elapsed = time.perf_counter() - start
    n = dataset.sizes["conformation"]
    print(
        f"{args.out}: {n} conformations of {'x'.join(map(str, args.shape))} @ "
        f"{args.voxel_size} A ({int(dataset['rendered'].sum())} done) in {elapsed:.1f} s"
    )
    return 0


def _cluster_options(args) -> dict:
    """`scheduler_file` and `security` (TLS) from the cluster options."""
    security = None
    if args.tls_ca_file or args.tls_cert or args.tls_key:
        from distributed import Security

        from .errors import UsageError

        files = {"--tls-ca-file": args.tls_ca_file, "--tls-cert": args.tls_cert,
                 "--tls-key": args.tls_key}
        for option, path in files.items():
            if not path:
                raise UsageError(f"{option}: TLS needs --tls-ca-file, --tls-cert and --tls-key")
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{option} {path}: no such file")
        security = Security(tls_ca_file=args.tls_ca_file, tls_client_cert=args.tls_cert,
                            tls_client_key=args.tls_key, require_encryption=True)
    return {"scheduler_file": args.scheduler_file, "security": security}


class _store_note:
    """Tells, after an interruption or a lost cluster, that the store resumes."""

    def __init__(self, store: str):
        self.store = store

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if kind is not None and os.path.isdir(self.store) and not issubclass(
            kind, (ValueError, FileNotFoundError)
        ):
            print(f"cryoensemble: {self.store} keeps the conformations already written; run "
                  "the same command again to render the rest", file=sys.stderr)
        return False


def _info(args) -> int:
    import json

    from .errors import PlanError
    from .store import as_location, open_store, read_parameters

    location = as_location(args.store, storage_options(args))
    location.check()
    if "://" not in location.url and os.path.isfile(location.url):
        raise PlanError(f"{args.store}: is a file, not a store directory")
    if "://" not in location.url and not os.path.exists(location.url):
        raise FileNotFoundError(f"{args.store}: no such store")
    if read_parameters(location) is None:
        raise PlanError(f"{args.store}: not a cryoensemble store")
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


def add_atom_options(parser, *, frames: bool = True) -> None:
    """Atom choice and frame options shared by `volume`, `render` and `images`."""
    parser.add_argument("--select", default="all",
                        help="MDAnalysis selection of the atoms to render, for every input "
                        "kind (e.g. 'protein and not name H*')")
    parser.add_argument("--exclude", metavar="ELEMENTS|SELECTION",
                        help="drop atoms: element symbols (X,QQ) or an MDAnalysis selection")
    parser.add_argument("--keep-frame", action="store_true",
                        help="keep the file's coordinate frame (maps overlay the model in "
                        "ChimeraX); default: centre the bulk of the atoms in the box")
    parser.add_argument("--outside", choices=["error", "warn", "clip"], default="warn",
                        help="atoms outside the box: refuse, warn (default; refuse above "
                        "--outside-tolerance of the scattering), or render what is inside")
    parser.add_argument("--outside-tolerance", type=fraction, default=0.01,
                        help="fraction of the scattering --outside warn accepts (0.01)")


def add_cluster_options(parser) -> None:
    """How to reach an existing Dask scheduler, and its TLS settings."""
    parser.add_argument("--scheduler-address", help="an existing Dask scheduler")
    parser.add_argument("--scheduler-file", help="an existing scheduler's --scheduler-file")
    parser.add_argument("--tls-ca-file", help="TLS: the CA certificate (PEM)")
    parser.add_argument("--tls-cert", help="TLS: this client's certificate (PEM)")
    parser.add_argument("--tls-key", help="TLS: this client's private key (PEM)")


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (exit 2), naming the command's --help."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"cryoensemble: {message} (see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .distributed import RENDERERS

    parser = _Parser(
        prog="cryoensemble", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show tracebacks and Dask's logs")
    commands = parser.add_subparsers(dest="command", required=True)

    volume = commands.add_parser("volume", help="render one structure to an MRC file")
    volume.add_argument("input", help="PDB or mmCIF file (optionally .gz)")
    volume.add_argument("--out", required=True, help="output .mrc")
    volume.add_argument("--shape", type=parse_shape, required=True, help="N or NZ,NY,NX")
    volume.add_argument("--voxel-size", type=positive_float, required=True, help="A")
    volume.add_argument("--model", type=non_negative_int, default=0, help="model index (0-based)")
    volume.add_argument("--b-factors", action="store_true", help="apply the file's B-factors")
    volume.add_argument("--overwrite", action="store_true")
    add_atom_options(volume)
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
    render.add_argument("--frames", help="START:STOP:STEP of trajectory frames (-10: the last 10)")
    render.add_argument("--morph", type=positive_int, metavar="N",
                        help="morph two inputs in N steps")
    render.add_argument("--weights", help="CSV of file,weight for structure-file inputs")
    render.add_argument("--renderer", choices=list(RENDERERS), default="gaussian",
                        help="; ".join(f"{r.name}: {r.description}" for r in RENDERERS.values()))
    render.add_argument("--b-factor", type=finite_float, default=0.0,
                        help="extra B for every atom, A^2")
    render.add_argument("--batch-size", type=positive_int,
                        help="conformations per task (default: auto)")
    render.add_argument("--n-batches", type=positive_int,
                        help="split each volume's atoms (default: automatic, z-slabs only for "
                        "huge atom sets)")
    render.add_argument("--split", choices=["slabs", "atoms"], default="slabs")
    render.add_argument("--dtype", choices=["float32", "float16"], default="float32")
    add_cluster_options(render)
    render.add_argument("--gpus", type=positive_int,
                        help="GPU workers: one process per core, cores divided among the GPUs")
    render.add_argument("--workers", type=positive_int,
                        help="CPU worker processes (default: cores)")
    render.add_argument("--overwrite", action="store_true", help="replace a store made otherwise")
    render.add_argument("--dry-run", action="store_true",
                        help="check and print the plan; exit non-zero if the run would fail")
    render.add_argument("--quiet", action="store_true", help="no progress bar")
    add_atom_options(render)
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
    for command in commands.choices.values():  # --debug before or after the command
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="show tracebacks and Dask's logs")
    return parser


def exit_code_and_message(error: BaseException) -> tuple[int, str]:
    """The exit code of an error and its one line for stderr."""
    from .errors import CryoEnsembleError, InfrastructureError, UsageError

    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "interrupted"
    if isinstance(error, UsageError):
        return EXIT_USAGE, text
    if isinstance(error, InfrastructureError):
        return EXIT_INFRASTRUCTURE, text
    if isinstance(error, ImportError):
        return EXIT_INFRASTRUCTURE, text
    if isinstance(error, (CryoEnsembleError, ValueError, FileNotFoundError, FileExistsError,
                          IsADirectoryError, NotADirectoryError, IndexError)):
        return EXIT_INPUT, text
    lost = _cluster_failure(error)
    if lost is not None:
        return EXIT_INFRASTRUCTURE, lost
    if isinstance(error, OSError):
        where = error.filename or "output"
        reason = error.strerror or text
        if error.errno == errno.ENOSPC:
            return EXIT_INFRASTRUCTURE, f"{where}: no space left on the device; free space " \
                "or choose another --out (a store resumes where it stopped)"
        if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return EXIT_INFRASTRUCTURE, f"{where}: {reason}; choose a writable --out"
        return EXIT_INFRASTRUCTURE, f"{where}: {reason}"
    return 1, f"unexpected {type(error).__name__}: {text} (rerun with --debug for the traceback)"


def _cluster_failure(error: BaseException) -> str | None:
    """A line for a Dask failure (lost scheduler, killed workers), or None."""
    import asyncio
    import concurrent.futures

    try:
        from distributed import KilledWorker
        from distributed.client import FutureCancelledError
        from distributed.comm.core import CommClosedError
    except ImportError:  # distributed is a runtime dependency; be safe anyway
        return None
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    if isinstance(error, KilledWorker):
        return (f"a task killed {error.args[1] if len(error.args) > 1 else 'several'} workers "
                f"in a row ({text}); out of memory? try a smaller --batch-size or --n-batches")
    if isinstance(error, (CommClosedError, FutureCancelledError, asyncio.CancelledError,
                          concurrent.futures.CancelledError, TimeoutError)):
        return f"lost the Dask scheduler or its workers ({type(error).__name__}: {text})"
    return None


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"cryoensemble: warning: {str(message).splitlines()[0]}", file=sys.stderr)


def _quiet_dask_logs() -> None:
    """Dask's own logs off (its loggers set their levels one by one): what matters is
    reported as one line."""
    import distributed  # noqa: F401 - configures its loggers, which are then quietened

    prefixes = ("distributed", "dask_cuda", "tornado", "asyncio")
    names = [n for n in logging.root.manager.loggerDict if n.startswith(prefixes)]
    for name in {*prefixes, *names}:
        logging.getLogger(name).setLevel(logging.CRITICAL)


def main(argv=None) -> int:
    argv = _join_dash_values(list(sys.argv[1:] if argv is None else argv))
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit:  # argparse: usage errors are 2, --help/--version 0
        return int(exit.code or 0)
    if not args.debug:
        _quiet_dask_logs()
    import dask.config

    level = "info" if args.debug else dask.config.get("cryoensemble.worker-log-level", "critical")
    with warnings.catch_warnings(), dask.config.set({"cryoensemble.worker-log-level": level}):
        if not args.debug:
            from .errors import OutsideBoxWarning

            warnings.simplefilter("ignore")  # libraries' warnings are for --debug
            warnings.simplefilter("always", OutsideBoxWarning)
            warnings.showwarning = _show_warning
        try:
            return args.run(args)
        except (Exception, KeyboardInterrupt) as error:  # noqa: BLE001 - one line, one code
            if args.debug:
                raise
            code, line = exit_code_and_message(error)
            print(f"cryoensemble: {line}", file=sys.stderr)
            return code
