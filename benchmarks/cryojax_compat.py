"""The cryojax drop-in check: cryojax's own tests, imports swapped to cryoensemble.

Downloads the cryojax sdist from PyPI (`pip download --no-binary :all:`), copies its tests
of volume representations, volume integrators, poses, ndimage, the PDB reader and atom
utilities (with their data) to a scratch folder, rewrites
`cryojax.{simulator,constants,io,ndimage,coordinates}` to `cryoensemble.*`, runs pytest
on them against this checkout and prints passed / failed. Nothing of cryojax is kept in
this repository. Other `cryojax.*` imports (`cryojax.rotations`, `cryojax.atom_util`)
stay cryojax's unless `--swap-atom-util` (then `cryojax.atom_util` ->
`cryoensemble.atom_util`), so the installed cryojax must import.

    python benchmarks/cryojax_compat.py [--version 0.5.6] [--workdir DIR] [--swap-atom-util]
"""

import argparse
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ElementTree


ROOT = pathlib.Path(__file__).resolve().parents[1]
TEST_FILES = (
    "test_volume_representations.py",
    "test_volume_integrators.py",
    "test_pose.py",
    "test_ndimage.py",
    "test_pdb_reader.py",
    "test_atom_util.py",
)
SWAPPED = ("simulator", "constants", "io", "ndimage", "coordinates")


def fetch_tests(version: str, workdir: pathlib.Path) -> pathlib.Path:
    """Download and unpack the sdist; return its `tests` folder."""
    download = workdir / "sdist"
    download.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
         f"cryojax=={version}", "-d", str(download), "-q"],
        check=True,
    )
    (archive,) = download.glob(f"cryojax-{version}.tar.gz")
    with tarfile.open(archive) as tar:
        tar.extractall(download, filter="data")
    tests = download / f"cryojax-{version}" / "tests"
    if not tests.is_dir():
        raise SystemExit(f"cryojax {version}: the sdist has no tests folder")
    return tests


def prepare(tests: pathlib.Path, target: pathlib.Path, swap_atom_util: bool) -> None:
    """Copy the test files, their data and conftest, with the imports swapped."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    shutil.copytree(tests / "data", target / "data")
    shutil.copy(tests / "conftest.py", target / "conftest.py")
    modules = SWAPPED + (("atom_util",) if swap_atom_util else ())
    pattern = re.compile(r"\bcryojax\.(" + "|".join(modules) + r")\b")
    for name in TEST_FILES:
        text = (tests / name).read_text()
        (target / name).write_text(pattern.sub(r"cryoensemble.\1", text))


def run(target: pathlib.Path) -> tuple[int, int, list[str]]:
    """Run pytest on the swapped tests; return (passed, failed, failed test ids)."""
    report = target / "report.xml"
    env = {"PYTHONPATH": str(ROOT)}
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(target),
         f"--junitxml={report}", "-o", "addopts="],
        cwd=target, env={**os.environ, **env}, check=False,
    )
    failed, passed = [], 0
    for case in ElementTree.parse(report).iter("testcase"):
        outcome = [child.tag for child in case]
        name = f"{case.get('classname')}::{case.get('name')}"
        if "failure" in outcome or "error" in outcome:
            failed.append(name)
        elif "skipped" not in outcome:
            passed += 1
    return passed, len(failed), failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", default="0.5.6", help="the cryojax release whose tests run")
    parser.add_argument("--workdir", type=pathlib.Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--swap-atom-util", action="store_true", help="also swap cryojax.atom_util")
    args = parser.parse_args()
    workdir = args.workdir or pathlib.Path(tempfile.mkdtemp(prefix="cryojax_compat_"))
    tests = fetch_tests(args.version, workdir)
    target = workdir / "swapped_tests"
    prepare(tests, target, args.swap_atom_util)
    passed, failed, names = run(target)
    print(f"cryojax {args.version} tests with cryoensemble: {passed} passed, {failed} failed of {passed + failed}")
    for name in names:
        print(f"  FAILED {name}")


if __name__ == "__main__":
    main()
