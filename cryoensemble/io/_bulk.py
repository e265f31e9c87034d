"""`bulk_centre` for millions of atoms: the float64 results of the plain NumPy recipe
(`np.median`, `np.linalg.norm`, `positions[bulk].mean(axis=0)`) to the last bit, without
its (n_atoms, 3) float64 temporaries or full sorts.

- A median is an exact order statistic: a sample brackets the middle ranks, one pass
  counts the values below the bracket and keeps those inside it, and only those are
  partitioned (all of them when the bracket misses: the result never depends on the
  sample, only the time does).
- Squared distances are summed per coordinate in the order `np.linalg.norm` sums them.
- The bulk's sum adds the rows one after another, as `mean(axis=0)` does over a C-ordered
  (n, 3) array (`np.einsum("ij->j")`, whose inner loop runs over the 3 coordinates), in
  blocks that carry the running sum as their first row.
"""

import numpy as np


_BLOCK = 1 << 15  # rows per block: a block's temporaries stay in cache
_SAMPLE = 1 << 16  # values sampled to bracket an order statistic
_DIRECT = 1 << 18  # up to this many values, partition them all
_MARGIN = 0.02  # the bracket's half-width in quantile (~10 sampling deviations)


def bulk_centre_of(positions: np.ndarray) -> tuple[np.ndarray, int, float]:
    """`cryoensemble.io.bulk_centre` (see there) of (n, 3) float32 or float64 positions."""
    n = len(positions)
    if n == 0:
        return _plain(positions)
    ranks = _middle_ranks(n)
    median = _column_medians(positions, ranks)
    bracket = None
    if n > _DIRECT:  # bracketed from the exact distances of sampled rows
        rows = positions[_sample(n)].astype(np.float64)
        sampled = np.sqrt(_squared(rows, np.tile(median, len(rows)), np.empty(len(rows))))
        bracket = _bracket(np.sort(sampled), n, ranks)
    distance, farthest, total, below, inside = _distances_and_sum(positions, median, bracket)
    if not np.isfinite(farthest):  # NaN or infinite coordinates: as the plain recipe has it
        return _plain(positions)
    picked = (_pick(distance, ranks, below, inside) if bracket is not None
              else np.partition(distance, ranks)[ranks])
    threshold = max(4.0 * _average(picked), 10.0)
    n_bulk = n  # every atom when even the farthest is within the threshold
    if farthest > threshold:
        bulk = distance <= threshold
        n_bulk = int(np.count_nonzero(bulk))
        total = _bulk_sum(positions, bulk)
    centre = total / n_bulk
    # The atom farthest from the centre lies within 2 |median - centre| of the distance of
    # the one farthest from the median (triangle inequality; the margin covers rounding):
    # only those are measured again.
    shift = float(np.sqrt(np.sum((median - centre) ** 2)))
    near = np.flatnonzero(distance >= farthest - 2.0 * shift - 1e-9 * (farthest + shift))
    rows = positions[near].astype(np.float64)
    squared = _squared(rows, np.tile(centre, len(rows)), np.empty(len(rows)))
    return centre, n - n_bulk, float(np.sqrt(squared.max()))


def _plain(positions: np.ndarray) -> tuple[np.ndarray, int, float]:
    """The recipe itself (empty or non-finite input: its NaNs, warnings and errors)."""
    positions = np.asarray(positions, dtype=np.float64)
    median = np.median(positions, axis=0)
    distance = np.linalg.norm(positions - median, axis=1)
    bulk = distance <= max(4.0 * float(np.median(distance)), 10.0)
    centre = positions[bulk].mean(axis=0)
    extent = float(np.linalg.norm(positions - centre, axis=1).max())
    return centre, int((~bulk).sum()), extent


def _blocks(n: int):
    return ((start, min(n, start + _BLOCK)) for start in range(0, n, _BLOCK))


def _middle_ranks(n: int) -> np.ndarray:
    """The ranks `np.median` averages."""
    return np.array([n // 2 - 1, n // 2] if n % 2 == 0 else [n // 2])


def _average(picked: np.ndarray) -> float:
    """`np.median`'s mean of the middle values, in float64."""
    return float(np.asarray(picked, np.float64).mean())


def _sample(n: int) -> np.ndarray:
    """Fixed indices of `_SAMPLE` of `n` values."""
    return np.random.default_rng(0).integers(0, n, _SAMPLE)


def _bracket(sample: np.ndarray, n: int, ranks: np.ndarray):
    """`(low, high)` values that likely hold `ranks` of `n` values between them, from a
    sorted sample of them, or None for ranks near an end."""
    low = int(np.floor((ranks[0] / n - _MARGIN) * len(sample)))
    high = int(np.ceil((ranks[-1] / n + _MARGIN) * len(sample)))
    if low < 0 or high >= len(sample):
        return None
    return sample[low], sample[high]


class _Band:
    """What one pass keeps of the values around a bracket: how many lie below it, and
    those inside it."""

    def __init__(self, bracket):
        self.low, self.high = bracket
        self.below, self.inside = 0, []

    def add(self, values: np.ndarray, below: np.ndarray, up_to_high: np.ndarray) -> None:
        """Fold in `values` (`below` and `up_to_high`: boolean scratch of their length)."""
        np.less(values, self.low, out=below)
        np.less_equal(values, self.high, out=up_to_high)
        self.below += int(np.count_nonzero(below))
        # Inside: up to `high` and not below `low` (NaNs are neither).
        self.inside.append(values[np.logical_xor(up_to_high, below, out=up_to_high)])

    def pick(self, values: np.ndarray, ranks: np.ndarray) -> np.ndarray:
        return _pick(values, ranks, self.below, np.concatenate(self.inside))


def _pick(values: np.ndarray, ranks: np.ndarray, below: int, inside: np.ndarray) -> np.ndarray:
    """The values of `ranks` in sorted order, from the `inside` of a bracket with `below`
    values under it when it holds them, else from all `values`."""
    if below <= ranks[0] and ranks[-1] < below + len(inside):
        local = ranks - below
        return np.partition(inside, local)[local]
    return np.partition(values, ranks)[ranks]


def _column_medians(positions: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """`np.median(positions, axis=0)` in float64: the three bands filled in one pass,
    each block transposed so that every comparison runs over contiguous values."""
    n = len(positions)
    if n <= _DIRECT:
        return np.array([_average(np.partition(positions[:, j], ranks)[ranks]) for j in range(3)])
    sample = np.sort(positions[_sample(n)], axis=0)
    brackets = [_bracket(sample[:, j], n, ranks) for j in range(3)]
    bands = {j: _Band(bracket) for j, bracket in enumerate(brackets) if bracket is not None}
    columns = np.empty((3, _BLOCK), positions.dtype)
    below, up_to_high = np.empty(_BLOCK, bool), np.empty(_BLOCK, bool)
    for start, stop in _blocks(n) if bands else ():
        m = stop - start
        block = columns[:, :m]
        block[...] = positions[start:stop].T
        for j, band in bands.items():
            band.add(block[j], below[:m], up_to_high[:m])
    return np.array([
        _average(bands[j].pick(positions[:, j], ranks) if j in bands
                 else np.partition(positions[:, j], ranks)[ranks])
        for j in range(3)
    ])


def _squared(rows: np.ndarray, point: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Squared float64 distances of C-ordered (m, 3) float64 rows (overwritten) to a
    point into `out`, summed `(dx^2 + dy^2) + dz^2` as `np.linalg.norm` sums them.
    `point`: the point repeated at least m times (flat: rows minus a (3,) point would
    run an inner loop 3 elements long)."""
    flat = rows.reshape(-1)
    np.subtract(flat, point[: flat.size], out=flat)
    np.multiply(flat, flat, out=flat)
    np.add(rows[:, 0], rows[:, 1], out=out)
    np.add(out, rows[:, 2], out=out)
    return out


def _distances_and_sum(positions: np.ndarray, point: np.ndarray, bracket):
    """Each row's float64 distance to `point` and the largest (NaN if any is), the float64
    sum of all rows added one after another, and (with a `bracket` of distances) how
    many distances lie below it and those inside it."""
    n = len(positions)
    distance = np.empty(n)
    rows = np.empty((_BLOCK + 1, 3))  # row 0 carries the running sum
    below, up_to_high = np.empty(_BLOCK, bool), np.empty(_BLOCK, bool)
    band = None if bracket is None else _Band(bracket)
    total, farthest = None, -np.inf
    point = np.tile(point, _BLOCK)
    for start, stop in _blocks(n):
        m = stop - start
        block = rows[1 : m + 1]
        block[...] = positions[start:stop]
        total = _add_rows(rows, m, total)
        here = _squared(block, point, distance[start:stop])  # the block is spent
        np.sqrt(here, out=here)
        farthest = np.maximum(farthest, here.max())
        if band is not None:
            band.add(here, below[:m], up_to_high[:m])
    if band is None:
        return distance, float(farthest), total, 0, None
    return distance, float(farthest), total, band.below, np.concatenate(band.inside)


def _bulk_sum(positions: np.ndarray, bulk: np.ndarray) -> np.ndarray:
    """The float64 sum of the rows in `bulk`, added one after another."""
    rows = np.empty((_BLOCK + 1, 3))
    total = None
    for start, stop in _blocks(len(positions)):
        kept = positions[start:stop][bulk[start:stop]]
        rows[1 : len(kept) + 1] = kept
        if len(kept):
            total = _add_rows(rows, len(kept), total)
    return total


def _add_rows(rows: np.ndarray, m: int, total: np.ndarray | None) -> np.ndarray:
    """`total` plus rows `1..m` of `rows`, added in order (`rows[0]` is overwritten)."""
    if total is None:
        return np.einsum("ij->j", rows[1 : m + 1])
    rows[0] = total
    return np.einsum("ij->j", rows[: m + 1])
