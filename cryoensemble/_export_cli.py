"""`cryoensemble export STORE`: one command for both kinds of store, by what STORE is.

A potential store (`render`) -> one MRC per conformation (`--mrc DIR`); a particle store
(`images`) -> RELION .mrcs stacks and .star (`--relion DIR`).
"""


def _export(args) -> int:
    from . import store as store_module
    from .cli import storage_options
    from .errors import UsageError

    options = storage_options(args)
    parameters = store_module.read_parameters(args.store, options)
    particles = parameters is not None and isinstance(
        store_module.layout_from_parameters(parameters), store_module.ImageStackLayout)
    if parameters is not None and not particles:
        if args.mrc is None:
            raise UsageError(f"{args.store}: a potential store exports to MRC: give --mrc DIR")
        if args.conformations is not None:
            try:
                store_module.parse_conformations(args.conformations, 2**62)  # syntax only
            except ValueError as error:
                raise UsageError(str(error)) from None
        paths = store_module.export_mrc(args.store, args.mrc, conformations=args.conformations,
                                        storage_options=options, overwrite=args.overwrite)
        print(f"{args.store} -> {len(paths)} MRC files in {args.mrc}")
        return 0
    if args.relion is None:
        raise UsageError(f"{args.store}: not a potential store; a particle store exports with "
                         "--relion DIR")
    if args.conformations is not None:
        raise UsageError("--conformations: only for a potential store (--mrc)")
    from .particles import export_relion

    star = export_relion(args.store, args.relion, images_per_stack=args.images_per_stack,
                         overwrite=args.overwrite)
    print(f"{args.store} -> {star}")
    return 0


def add_parser(subparsers, storage_option) -> None:
    """Add `export` to the `cryoensemble` command's subparsers (`storage_option` parses
    `--storage-option KEY=VALUE`)."""
    export = subparsers.add_parser(
        "export", help="export a store: potentials to MRC, particles to RELION",
        description="A potential store (from `render`) becomes one MRC per conformation "
        "with its voxel size and an origin that overlays the input model; a particle store "
        "(from `images`) becomes RELION .mrcs stacks and a .star file.")
    export.add_argument("store", help="a path or URL")
    target = export.add_mutually_exclusive_group(required=True)
    target.add_argument("--mrc", metavar="DIR", help="potential store: MRC output folder")
    target.add_argument("--relion", metavar="DIR", help="particle store: RELION output folder")
    export.add_argument("--conformations", metavar="LIST",
                        help="potential store: indices and inclusive ranges, e.g. 0,5,10-20 "
                        "(default all)")
    export.add_argument("--images-per-stack", type=int, default=10000,
                        help="particle store: images per .mrcs file")
    export.add_argument("--storage-option", type=storage_option, action="append",
                        metavar="KEY=VALUE", help="fsspec storage option (repeatable)")
    export.add_argument("--overwrite", action="store_true", help="replace existing files")
    export.set_defaults(run=_export)
