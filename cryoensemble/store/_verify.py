"""Checking a store end to end: metadata, markers, shard presence, every checksum."""

import dataclasses
import json

import numpy as np

from ._layout import EMPTY_SHARD, RENDERED, ImageStackLayout, layout_from_parameters
from ._schema import IDENTITY, parse_identity
from ._writer import ROOT_METADATA, as_location, read_parameters, stored_objects


@dataclasses.dataclass
class VerifyReport:
    """What `verify_store` found.

    - `store`: the URL; `n_conformations`: its units (conformations of a potential
      store, chunks of particles of a particle store, `unit` says which); `done`: units
      marked and intact.
    - `bad`: {unit: reason} for marked units whose data is missing or fails its
      checksum (render them again: `verify --repair`).
    - `not_rendered`: units without a marker (a resume renders them).
    - `metadata`: problems with the store's metadata (a rerun of render rewrites it).
    - `sample`: {conformation: relative L2 against a fresh render} when sampled.
    """

    store: str
    n_conformations: int = 0
    done: list[int] = dataclasses.field(default_factory=list)
    bad: dict[int, str] = dataclasses.field(default_factory=dict)
    not_rendered: list[int] = dataclasses.field(default_factory=list)
    metadata: list[str] = dataclasses.field(default_factory=list)
    sample: dict[int, float] = dataclasses.field(default_factory=dict)
    sample_tolerance: float = 0.0
    unit: str = "conformation"

    @property
    def sample_failures(self) -> dict[int, float]:
        return {i: e for i, e in self.sample.items() if not e <= self.sample_tolerance}

    @property
    def ok(self) -> bool:
        return not (self.bad or self.not_rendered or self.metadata or self.sample_failures)

    def summary(self) -> str:
        lines = [f"{self.store}: {len(self.done)} / {self.n_conformations} {self.unit}s "
                 f"intact, {len(self.bad)} bad, {len(self.not_rendered)} not rendered"]
        lines += [f"  metadata: {problem}" for problem in self.metadata]
        lines += [f"  {self.unit} {i}: {reason}" for i, reason in sorted(self.bad.items())]
        if self.not_rendered:
            shown = ", ".join(map(str, self.not_rendered[:20]))
            more = " ..." if len(self.not_rendered) > 20 else ""
            lines.append(f"  not rendered: {shown}{more}")
        for i, error in sorted(self.sample.items()):
            verdict = "ok" if error <= self.sample_tolerance else "MISMATCH"
            lines.append(f"  sample {i}: relative L2 {error:.2e} against a fresh render ({verdict})")
        lines.append("  OK" if self.ok else "  FAILED")
        return "\n".join(lines)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def verify_store(store, storage_options=None, check_data: bool = True) -> VerifyReport:
    """Check a store: identity and metadata documents, a marker for every conformation,
    every shard of a marked conformation present (or recorded empty), and (with
    `check_data`) every chunk decoded with its crc32c checksum.

    **Returns:** a `VerifyReport` naming each bad conformation.
    """
    import zarr

    from ..errors import StoreMismatchError

    location = as_location(store, storage_options)
    report = VerifyReport(location.url)
    parameters = read_parameters(location)
    if parameters is None:
        raise StoreMismatchError(f"{location.url}: not a cryoensemble store")
    identity = parse_identity(location.get(IDENTITY))
    if identity is None:
        report.metadata.append(f"{IDENTITY} missing or unreadable")
    layout = layout_from_parameters(parameters, identity and identity["format"])
    stack = isinstance(layout, ImageStackLayout)
    report.unit = layout.unit_dim
    extras = ["noise_sigma"] if stack else []
    for key in (ROOT_METADATA, f"{layout.array}/zarr.json", f"{RENDERED}/zarr.json",
                f"{EMPTY_SHARD}/zarr.json", *(f"{name}/zarr.json" for name in extras)):
        data = location.get(key)
        try:
            json.loads(data) if data is not None else None
        except ValueError:
            data = None
        if data is None:
            report.metadata.append(f"{key} missing or unreadable")
    report.n_conformations = layout.n_units
    objects = stored_objects(location, layout)
    present = objects["shards"] | objects["empty"]
    extra_chunks = {name: {key for key in location.list_keys(f"{name}/c")} for name in extras}
    for i in range(layout.n_units):
        if i not in objects["markers"]:
            report.not_rendered.append(i)
            continue
        missing = [s for s in range(layout.shards_per_unit) if (i, s) not in present]
        if missing:
            report.bad[i] = f"shard(s) {missing} of {layout.array} missing"
        for name in extras:
            if f"{name}/c/{i}" not in extra_chunks[name]:
                report.bad[i] = f"chunk of {name} missing"
    if check_data and not any(k.startswith(f"{layout.array}/") for k in report.metadata):
        arrays = [zarr.open_array(location.zarr_store(read_only=True), path=name, mode="r")
                  for name in [layout.array] + extras]
        units = sorted(i for i in objects["markers"] - set(report.bad) if i < layout.n_units)
        for block in _blocks(units, layout):
            _check_block(arrays, layout, block, report)
    report.done = [i for i in sorted(objects["markers"])
                   if i < layout.n_units and i not in report.bad]
    return report


# Units decoded per read: zarr decodes the chunks of one read concurrently.
_BLOCK_BYTES = 256 * 2**20


def _blocks(units: list[int], layout) -> list[list[int]]:
    """Runs of consecutive units, each at most `_BLOCK_BYTES` of decoded data."""
    unit_bytes = int(np.prod(layout.shards)) * np.dtype(layout.dtype).itemsize
    most = max(1, _BLOCK_BYTES // unit_bytes)
    blocks: list[list[int]] = []
    for i in units:
        if blocks and blocks[-1][-1] == i - 1 and len(blocks[-1]) < most:
            blocks[-1].append(i)
        else:
            blocks.append([i])
    return blocks


def _rows(layout, first: int, last: int) -> slice:
    """The data rows of units [first, last] (conformations, or a particle chunk's images)."""
    if isinstance(layout, ImageStackLayout):
        return slice(layout.unit_range(first)[0], layout.unit_range(last)[1])
    return slice(first, last + 1)


def _check_block(arrays, layout, block: list[int], report: VerifyReport) -> None:
    """Decode a run of units in one read per array; a read that fails is read again unit by
    unit, so that the report names each damaged one."""
    try:
        values = [array[_rows(layout, block[0], block[-1])] for array in arrays]
    except Exception as error:  # noqa: BLE001 - any decode failure is damage
        if len(block) == 1:
            report.bad[block[0]] = f"unreadable ({_first_line(error)})"
            return
        for i in block:
            _check_block(arrays, layout, [i], report)
        return
    offset = _rows(layout, block[0], block[-1]).start
    for i in block:
        rows = _rows(layout, i, i)
        part = slice(rows.start - offset, rows.stop - offset)
        if not all(np.isfinite(v[part]).all() for v in values):
            report.bad[i] = "non-finite values"
