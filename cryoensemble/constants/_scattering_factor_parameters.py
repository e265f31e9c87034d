"""cryojax's module path for the tabulated parameters (its tests import
`_SUPPORTED_ATOMIC_NUMBERS` from here): the elements both tables cover."""

import numpy as np

from .scattering_factors import (
    LobatoScatteringFactorParameters as LobatoScatteringFactorParameters,
    PengScatteringFactorParameters as PengScatteringFactorParameters,
    lobato_table,
    peng_table,
)


_SUPPORTED_ATOMIC_NUMBERS = [
    int(z) for z in np.flatnonzero(peng_table()[2] & lobato_table()[2])
]
