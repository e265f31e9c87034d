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


_BLOCK = 1 << 16  # rows per block: a block's temporaries stay in cache
_SAMPLE = 1 << 16  # values sampled to bracket an order statistic
_DIRECT = 1 << 18  # up to this many values, partition them all
_MARGIN = 0.02  # the bracket's half-width in quantile (~10 sampling deviations)


def bulk_centre_of(positions: np.ndarray) -> tuple[np.ndarray, int, float]:
    """`cryoensemble.io.bulk_centre` (see there) of (n, 3) float32 or float64 positions."""
    n = len(positions)
    if n == 0:
        return _plain(positions)
    median = _column_medians(positions)
    distance, total = _distances_and_sum(positions, median)
    farthest = float(distance.max())
    if not np.isfinite(farthest):  # NaN or infinite coordinates: as the plain recipe has it
        return _plain(positions)
    bulk = distance <= max(4.0 * float(_median(distance)), 10.0)
    n_bulk = int(np.count_nonzero(bulk))
    if n_bulk < n:
        total = _bulk_sum(positions, bulk)
    centre = total / n_bulk
    # The atom farthest from the centre lies within 2 |median - centre| of the distance of
    # the one farthest from the median (triangle inequality; the margin covers rounding):
    # only those are measured again.
    shift = float(np.sqrt(np.sum((median - centre) ** 2)))
    near = distance >= farthest - 2.0 * shift - 1e-9 * (farthest + shift)
    rows = positions[near].astype(np.float64)
    squared = _squared(rows, centre, np.empty(len(rows)), np.empty(len(rows)))
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


def _bracket(values: np.ndarray, ranks: np.ndarray):
    """`(low, high)` values that likely hold `ranks` between them (from a fixed sample), or
    None for few values or ranks near an end."""
    n = len(values)
    if n <= _DIRECT:
        return None
    sample = np.sort(values[np.random.default_rng(0).integers(0, n, _SAMPLE)])
    low = int(np.floor((ranks[0] / n - _MARGIN) * _SAMPLE))
    high = int(np.ceil((ranks[-1] / n + _MARGIN) * _SAMPLE))
    if low < 0 or high >= _SAMPLE:
        return None
    return sample[low], sample[high]


def _pick(values: np.ndarray, ranks: np.ndarray, below: int, inside: np.ndarray) -> np.ndarray:
    """The values of `ranks` in sorted order, from the `inside` of a bracket with `below`
    values under it when it holds them, else from all `values`."""
    if below <= ranks[0] and ranks[-1] < below + len(inside):
        local = ranks - below
        return np.partition(inside, local)[local]
    return np.partition(values, ranks)[ranks]


def _median(values: np.ndarray) -> float:
    """`np.median` of a 1-D array without NaNs."""
    ranks = _middle_ranks(len(values))
    bracket = _bracket(values, ranks)
    if bracket is None:
        return _average(np.partition(values, ranks)[ranks])
    low, high = bracket
    inside = values[(values >= low) & (values <= high)]
    return _average(_pick(values, ranks, int(np.count_nonzero(values < low)), inside))


def _column_medians(positions: np.ndarray) -> np.ndarray:
    """`np.median(positions, axis=0)` in float64: the three brackets filled in one pass,
    each block transposed so that every comparison runs over contiguous values."""
    n = len(positions)
    ranks = _middle_ranks(n)
    brackets = [_bracket(positions[:, j], ranks) for j in range(3)]
    below, inside = [0, 0, 0], [[], [], []]
    bracketed = [j for j in range(3) if brackets[j] is not None]
    if bracketed:
        columns = np.empty((3, _BLOCK), positions.dtype)
        for start, stop in _blocks(n):
            block = columns[:, : stop - start]
            block[...] = positions[start:stop].T
            for j in bracketed:
                low, high = brackets[j]
                values = block[j]
                below[j] += int(np.count_nonzero(values < low))
                inside[j].append(values[(values >= low) & (values <= high)])
    medians = np.empty(3)
    for j in range(3):
        if brackets[j] is None:
            picked = np.partition(positions[:, j], ranks)[ranks]
        else:
            picked = _pick(positions[:, j], ranks, below[j], np.concatenate(inside[j]))
        medians[j] = _average(picked)
    return medians


def _squared(rows: np.ndarray, point: np.ndarray, out: np.ndarray, scratch: np.ndarray):
    """Squared float64 distances of (m, 3) float64 rows to `point`, summed
    `(dx^2 + dy^2) + dz^2` as `np.linalg.norm` sums them."""
    for j in range(3):
        target = out if j == 0 else scratch
        np.subtract(rows[:, j], point[j], out=target)
        np.multiply(target, target, out=target)
        if j:
            np.add(out, target, out=out)
    return out


def _distances_and_sum(positions: np.ndarray, point: np.ndarray):
    """Each row's float64 distance to `point`, and the float64 sum of all rows added one
    after another."""
    n = len(positions)
    distance = np.empty(n)
    rows = np.empty((_BLOCK + 1, 3))  # row 0 carries the running sum
    scratch = np.empty(_BLOCK)
    total = None
    for start, stop in _blocks(n):
        m = stop - start
        block = rows[1 : m + 1]
        block[...] = positions[start:stop]
        _squared(block, point, distance[start:stop], scratch[:m])
        total = _add_rows(rows, m, total)
    np.sqrt(distance, out=distance)
    return distance, total


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
