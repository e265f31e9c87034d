"""Tabulated electron scattering factors.

Peng et al. (1996) five-gaussian parameters come from gemmi (`Element.c4322`,
International Tables C, Table 4.3.2.2): f(q) = sum_i a_i exp(-b_i q^2) with q = |xi| / 2,
a_i in A and b_i in A^2. Nothing is typed in by hand.

Lobato & Van Dyck (2014) parameters come from the package data file
`data/lobato_2014.json` (as tabulated in the abTEM parametrization data, H..Lr):
f(g) = sum_i a_i (2 + b_i g^2) / (1 + b_i g^2)^2 with g = |xi| (not |xi| / 2), a_i in A
and b_i in A^2, so f(0) = 2 sum_i a_i.
"""

import json
from functools import lru_cache
from importlib import resources

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from ..errors import UnsupportedElementError


# gemmi knows elements up to Og (118); its Peng table stops earlier (Cf, 98).
_MAX_ATOMIC_NUMBER = 118


@lru_cache(maxsize=1)
def peng_table() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The whole Peng (1996) table from gemmi, indexed by atomic number.

    **Returns:**

    `(a, b, supported)`: `a` and `b` of shape `(119, 5)` (row Z holds element Z; rows of
    unsupported elements are NaN), and a boolean mask of the elements gemmi tabulates.
    """
    import gemmi

    a = np.full((_MAX_ATOMIC_NUMBER + 1, 5), np.nan)
    b = np.full((_MAX_ATOMIC_NUMBER + 1, 5), np.nan)
    supported = np.zeros(_MAX_ATOMIC_NUMBER + 1, dtype=bool)
    for z in range(1, _MAX_ATOMIC_NUMBER + 1):
        coefficients = gemmi.Element(z).c4322
        if coefficients is None:
            continue
        # .a/.b give the tabulated decimals; get_coefs() gives float32-rounded copies.
        a[z], b[z] = coefficients.a, coefficients.b
        supported[z] = True
    return a, b, supported


def element_symbol(atomic_number: int) -> str:
    """The chemical symbol of an atomic number (`'?'` if gemmi does not know it)."""
    import gemmi

    if 1 <= int(atomic_number) <= _MAX_ATOMIC_NUMBER:
        return gemmi.Element(int(atomic_number)).name
    return f"Z={int(atomic_number)}"


def check_atomic_numbers(
    atomic_numbers, supported: np.ndarray, table_name: str
) -> np.ndarray:
    """Validate atomic numbers against a table's supported elements.

    Raises `UnsupportedElementError` naming every element the table lacks.
    """
    atomic_numbers = np.asarray(atomic_numbers)
    if atomic_numbers.ndim != 1:
        raise ValueError(
            f"atom_types must be a 1D array of atomic numbers; got shape {atomic_numbers.shape}"
        )
    if not np.issubdtype(atomic_numbers.dtype, np.integer):
        raise TypeError(
            f"atom_types must hold integer atomic numbers; got dtype {atomic_numbers.dtype}"
        )
    in_range = (atomic_numbers >= 1) & (atomic_numbers <= _MAX_ATOMIC_NUMBER)
    ok = np.zeros_like(in_range)
    ok[in_range] = supported[atomic_numbers[in_range]]
    if not ok.all():
        bad = sorted({int(z) for z in atomic_numbers[~ok]})
        names = ", ".join(f"{element_symbol(z)} (Z={z})" for z in bad)
        raise UnsupportedElementError(f"{table_name} has no parameters for: {names}")
    return atomic_numbers


def check_atomic_numbers_supported(atomic_numbers) -> None:
    """Raise a ValueError (`UnsupportedElementError`) naming every atomic number that the
    Peng (1996) or the Lobato (2014) table lacks (cryojax's check; here H to Cf, Z 1-98).

    **Arguments:**

    - `atomic_numbers`: integer atomic numbers, any shape.
    """
    atomic_numbers = np.unique(np.asarray(atomic_numbers)).ravel()
    supported = peng_table()[2] & lobato_table()[2]
    check_atomic_numbers(atomic_numbers, supported, "The Peng (1996) and Lobato (2014) tables")


class PengScatteringFactorParameters(eqx.Module):
    """Peng et al. (1996) electron scattering factor parameters, one row per atom.

    `a` (A) and `b` (A^2) have shape `(n_atoms, 5)`; the scattering factor of atom n is
    `f(q) = sum_i a[n, i] exp(-b[n, i] q^2)` with `q = |xi| / 2`.
    """

    a: Float[Array, "n_atoms 5"]
    b: Float[Array, "n_atoms 5"]

    def __init__(self, atom_types: Int[np.ndarray, " n_atoms"] | Int[Array, " n_atoms"]):
        """**Arguments:**

        - `atom_types`: atomic numbers, shape `(n_atoms,)` (as returned by
          `cryoensemble.io.read_atoms_from_pdb`).
        """
        a, b = peng_parameters_numpy(atom_types)
        self.a = jnp.asarray(a)
        self.b = jnp.asarray(b)


def peng_parameters_numpy(atom_types) -> tuple[np.ndarray, np.ndarray]:
    """`(a, b)` of `PengScatteringFactorParameters(atom_types)` as NumPy arrays (A, A^2;
    shape `(n_atoms, 5)`), for host-side planning that must not start a JAX backend;
    unsupported elements are named alike."""
    a, b, supported = peng_table()
    atom_types = check_atomic_numbers(atom_types, supported, "The Peng (1996) table")
    return a[atom_types], b[atom_types]


@lru_cache(maxsize=1)
def lobato_table() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The whole Lobato & Van Dyck (2014) table, indexed by atomic number.

    **Returns:**

    `(a, b, supported)`: `a` (A) and `b` (A^2) of shape `(119, 5)` (row Z holds element
    Z; rows of unsupported elements are NaN), and a boolean mask of the tabulated elements.
    """
    import gemmi

    text = resources.files(__package__).joinpath("data", "lobato_2014.json").read_text()
    a = np.full((_MAX_ATOMIC_NUMBER + 1, 5), np.nan)
    b = np.full((_MAX_ATOMIC_NUMBER + 1, 5), np.nan)
    supported = np.zeros(_MAX_ATOMIC_NUMBER + 1, dtype=bool)
    for symbol, (a_row, b_row) in json.loads(text).items():
        z = gemmi.Element(symbol).atomic_number
        if z < 1:
            raise ValueError(f"lobato_2014.json: unknown element symbol {symbol!r}")
        a[z], b[z] = a_row, b_row
        supported[z] = True
    return a, b, supported


class LobatoScatteringFactorParameters(eqx.Module):
    """Lobato & Van Dyck (2014) electron scattering factor parameters, one row per atom.

    `a` (A) and `b` (A^2) have shape `(n_atoms, 5)`; the scattering factor of atom n is
    `f(g) = sum_i a[n, i] (2 + b[n, i] g^2) / (1 + b[n, i] g^2)^2` with `g = |xi|` in A^-1
    (Peng's tables use `q = |xi| / 2`). Elements H (1) to Lr (103) are tabulated.
    """

    a: Float[Array, "n_atoms 5"]
    b: Float[Array, "n_atoms 5"]

    def __init__(self, atom_types: Int[np.ndarray, " n_atoms"] | Int[Array, " n_atoms"]):
        """**Arguments:**

        - `atom_types`: atomic numbers, shape `(n_atoms,)` (as returned by
          `cryoensemble.io.read_atoms_from_pdb`).
        """
        a, b, supported = lobato_table()
        atom_types = check_atomic_numbers(
            atom_types, supported, "The Lobato & Van Dyck (2014) table"
        )
        self.a = jnp.asarray(a[atom_types])
        self.b = jnp.asarray(b[atom_types])
