"""Example inputs: adenylate kinase (AdK) files shipped by the `MDAnalysisTests` package.

The demo, the notebooks and the docs use these so that a plain clone needs no data beside
it: `pip install cryoensemble[examples]` (or `MDAnalysisTests`) brings them.

| name | what it is |
| --- | --- |
| `adk.psf` + `adk_dims.dcd` | AdK closed -> open transition (DIMS), 3,341 atoms x 98 frames |
| `adk_closed.pdb`, `adk_open.pdb` | the end states (1AKE, 4AKE), CHARMM-written |
| `adk_oplsaa.pdb` + `adk_oplsaa.xtc` | AdK solvated in water (GROMACS, OPLS-AA), 47,681 atoms x 10 frames |
"""

import importlib.util
import os


EXAMPLE_FILES = ("adk.psf", "adk_dims.dcd", "adk_closed.pdb", "adk_open.pdb", "adk_oplsaa.pdb",
                 "adk_oplsaa.xtc")


def example_path(name: str) -> str:
    """The absolute path of the example file `name` (one of `EXAMPLE_FILES`).

    **Arguments:**

    - `name`: a file name from `EXAMPLE_FILES`.

    **Returns:** the path inside the installed `MDAnalysisTests` package.
    """
    if name not in EXAMPLE_FILES:
        raise ValueError(f"example_path: unknown example {name!r}; one of {', '.join(EXAMPLE_FILES)}")
    spec = importlib.util.find_spec("MDAnalysisTests")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"example_path: {name!r} comes from the MDAnalysisTests package; "
            "pip install 'cryoensemble[examples]'"
        )
    # The data folder is found without importing MDAnalysisTests (its import pulls in the
    # MDAnalysis test machinery).
    path = os.path.join(spec.submodule_search_locations[0], "data", name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"example_path: {path}: not in this MDAnalysisTests install")
    return path
