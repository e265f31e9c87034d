"""Packaging: the version, licence, typing marker, and dependencies that match imports."""

import ast
import importlib.metadata
import json
import pathlib
import re
import subprocess
import sys
import tomllib


ROOT = pathlib.Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]


def requirement_name(requirement: str) -> str:
    return re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower().replace("_", "-")


def imported_top_levels(sources) -> set[str]:
    names = set()
    for source in sources:
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names.add(node.module.split(".")[0])
    return names


def distributions(modules) -> set[str]:
    """Distributions providing the non-stdlib, non-project `modules` (an optional one
    that is not installed here, e.g. dask_cuda, by its module name)."""
    providers = importlib.metadata.packages_distributions()
    # GPU-only modules (the `gpu` extra) whose distribution names differ from the module.
    absent = {"cuda": "cuda-bindings", "nvidia": "nvidia-nvcomp-cu13", "dask_cuda": "dask-cuda"}
    found = set()
    for module in modules - set(sys.stdlib_module_names) - {"cryoensemble"}:
        names = providers.get(module, [absent.get(module, module)])
        found |= {d.lower().replace("_", "-") for d in names}
    return found


def test_version_everywhere_is_pyprojects():
    from cryoensemble import __version__

    assert __version__ == PROJECT["version"]
    result = subprocess.run([sys.executable, "-m", "cryoensemble", "--version"],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == f"cryoensemble {PROJECT['version']}"


def test_license_and_typing_marker():
    assert PROJECT["license"] == "BSD-3-Clause" and PROJECT["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("BSD 3-Clause License") and "Neither the name of the copyright holder" in text
    assert (ROOT / "cryoensemble" / "py.typed").is_file()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["cryoensemble"]
    assert re.search(rf"^## \[{re.escape(PROJECT['version'])}\]", (ROOT / "CHANGELOG.md").read_text(), re.M)


def test_runtime_dependencies_match_the_package_imports():
    package = [p.read_text() for p in (ROOT / "cryoensemble").rglob("*.py")]
    used = distributions(imported_top_levels(package))
    declared = {requirement_name(r) for r in PROJECT["dependencies"]}
    extras = {requirement_name(r) for reqs in PROJECT["optional-dependencies"].values()
              for r in reqs}
    assert used <= declared | extras, f"imported but not declared: {used - declared - extras}"
    # Every runtime dependency is imported somewhere (dask[array] and distributed count).
    unused = {d for d in declared if d not in used and d != "dask"}
    assert not unused, f"declared but never imported: {unused}"


def test_notebook_imports_are_declared():
    cells = []
    for path in (ROOT / "notebooks").glob("*.ipynb"):
        cells += ["".join(c["source"]) for c in json.loads(path.read_text())["cells"]
                  if c["cell_type"] == "code"]
    used = distributions(imported_top_levels(cells))
    declared = {requirement_name(r) for r in PROJECT["dependencies"]}
    examples = {requirement_name(r) for r in PROJECT["optional-dependencies"]["examples"]}
    assert used <= declared | examples, f"notebooks import undeclared: {used - declared - examples}"
