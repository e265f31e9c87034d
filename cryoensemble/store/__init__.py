"""The volume store: an xarray Dataset in a zarr (format 3) store at any fsspec URL.

Potential stores (`StoreLayout`): `potential` (conformation, z, y, x), A^-2, float32 or
float16, one zarr v3 shard (one object) per conformation or per z-slab of it, inner chunks
zstd-compressed and crc32c-checksummed, empty inner chunks not stored; coordinates in A;
per-conformation labels from the source; `rendered` and `empty_shard` markers (see
`_schema`). Particle stores (`ImageStackLayout`, `ImageStackWriter`) follow the same
rules with `images (particle, y, x)` cut into chunks of particles. Plain zarr v3:
zarr-python and xarray open it without cryoensemble.

The distributed layer needs nothing but a `StoreLocation` and these functions:
`prepare_store`, `done_conformations`, `open_writer` (`StoreWriter.write_volumes`,
`.mark_rendered`), `acquire_lease`, `open_store`, `verify_store`; `export_mrc` writes
conformations as MRC files.
"""

from ..errors import StoreCorruptionError, StoreLeaseError, StoreLocationError, StoreMismatchError
from ._export import export_mrc as export_mrc, parse_conformations as parse_conformations
from ._layout import (
    EMPTY_SHARD as EMPTY_SHARD,
    IMAGES as IMAGES,
    POTENTIAL as POTENTIAL,
    RENDERED as RENDERED,
    ImageStackLayout as ImageStackLayout,
    StoreLayout as StoreLayout,
    choose_z_chunk as choose_z_chunk,
    layout_from_parameters as layout_from_parameters,
)
from ._lease import StoreLease as StoreLease, acquire_lease as acquire_lease, read_lease as read_lease
from ._location import StoreLocation as StoreLocation
from ._schema import (
    canonical as canonical_parameters,
    package_versions as package_versions,
    potential_dataset as potential_dataset,
)
from ._verify import VerifyReport as VerifyReport, verify_store as verify_store
from ._writer import (
    ImageStackWriter as ImageStackWriter,
    StoreWriter as StoreWriter,
    as_location as as_location,
    check_target as check_target,
    done_conformations as done_conformations,
    forget_conformations as forget_conformations,
    mark_rendered as mark_rendered,
    open_store as open_store,
    open_writer as open_writer,
    prepare_store as prepare_store,
    read_parameters as read_parameters,
    store_generation as store_generation,
    write_volumes as write_volumes,
)


__all__ = [
    "EMPTY_SHARD", "IMAGES", "ImageStackLayout", "ImageStackWriter", "POTENTIAL", "RENDERED", "StoreCorruptionError", "StoreLayout", "StoreLease",
    "StoreLeaseError", "StoreLocation", "StoreLocationError", "StoreMismatchError", "StoreWriter",
    "VerifyReport", "acquire_lease", "as_location", "canonical_parameters", "check_target", "choose_z_chunk",
    "done_conformations", "export_mrc", "forget_conformations", "layout_from_parameters", "mark_rendered",
    "open_store", "open_writer", "package_versions", "parse_conformations", "potential_dataset",
    "prepare_store", "read_lease", "read_parameters", "store_generation", "verify_store",
    "write_volumes",
]
