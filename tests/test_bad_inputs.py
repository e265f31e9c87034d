"""A corpus of bad inputs, run through the command line as a user would.

Each case asserts the exit code (2 usage, 3 input, 4 infrastructure), that stderr is one
line naming the input and the problem, that no file the user had changed, and that no
store was left behind. Cases that must fail before a cluster starts run in-process
(`cryoensemble.cli.main`); the interrupt runs a real subprocess.
"""

import os
import shutil
import signal
import subprocess
import sys
import time

import gemmi
import mrcfile
import numpy as np
import pytest

from conftest import DATA, ROOT, TEST_DATA
from cryoensemble.cli import main


BAD = TEST_DATA / "bad"
GOOD = TEST_DATA / "good"
TWELVE = GOOD / "twelve_atoms.pdb"
PAIR = (GOOD / "model_a.pdb", GOOD / "model_b.pdb")  # the twelve atoms, named in weights_*.csv
PSF, DCD = DATA / "adk.psf", DATA / "adk_dims.dcd"


def _snapshot(*folders) -> dict:
    files = {}
    for folder in folders:
        for root, _, names in os.walk(folder):
            for name in names:
                path = os.path.join(root, name)
                stat = os.stat(path)
                files[path] = (stat.st_size, stat.st_mtime_ns)
    return files


def _stores(folder) -> list[str]:
    return [root for root, _, names in os.walk(folder) if "zarr.json" in names]


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    """Run `cryoensemble ARGS` in tmp_path; return (exit code, stdout, stderr)."""
    monkeypatch.chdir(tmp_path)

    def run(*argv):
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def _render(*inputs, shape=32, voxel=1.0, out="out.zarr", extra=()):
    return ("render", *inputs, "--out", out, "--shape", shape, "--voxel-size", voxel,
            "--dry-run", *extra)


def _twelve(*extra):
    return _render(TWELVE, extra=extra)


# (id, argv, exit code, words in the one line on stderr)
CASES = [
    # usage: options that do not parse or go together (2)
    ("shape-zero", _render(TWELVE, shape=0), 2, ["--shape"]),
    ("shape-text", _render(TWELVE, shape="abc"), 2, ["--shape"]),
    ("shape-two-numbers", _render(TWELVE, shape="10,20"), 2, ["--shape"]),
    ("voxel-inf", _render(TWELVE, voxel="inf"), 2, ["--voxel-size", "finite"]),
    ("voxel-nan", _render(TWELVE, voxel="nan"), 2, ["--voxel-size", "finite"]),
    ("voxel-negative", _render(TWELVE, voxel="-1"), 2, ["--voxel-size"]),
    ("gpus-negative", _twelve("--gpus", "-1"), 2, ["--gpus", ">= 1"]),
    ("workers-zero", _twelve("--workers", "0"), 2, ["--workers", ">= 1"]),
    ("batch-size-zero", _twelve("--batch-size", "0"), 2, ["--batch-size"]),
    ("n-batches-zero", _twelve("--n-batches", "0"), 2, ["--n-batches"]),
    ("morph-zero", _render(TWELVE, TWELVE, extra=("--morph", "0")), 2, ["--morph"]),
    ("morph-three-inputs", _render(TWELVE, TWELVE, TWELVE, extra=("--morph", "3")), 2,
     ["--morph needs exactly two"]),
    ("frames-without-topology", _twelve("--frames", "0:5"), 2, ["--frames needs --topology"]),
    ("tolerance-above-one", _twelve("--outside-tolerance", "2"), 2, ["--outside-tolerance"]),
    ("b-factor-nan", _twelve("--b-factor", "nan"), 2, ["--b-factor"]),
    ("unknown-option", _twelve("--colour", "red"), 2, ["--colour"]),
    ("tls-half", _twelve("--scheduler-address", "tls://127.0.0.1:1", "--tls-cert", TWELVE),
     2, ["TLS needs"]),
    ("weights-for-a-trajectory", _render(DCD, extra=("--topology", PSF, "--weights",
                                                      BAD / "weights_nan.csv")), 2, ["--weights"]),
    ("morph-of-a-trajectory", _render(DCD, extra=("--topology", PSF, "--morph", 3)), 2,
     ["--morph", "--topology"]),
    ("lone-gro", _render(BAD / "lone.gro"), 2, ["lone.gro", "--topology"]),
    ("lone-pqr", _render(BAD / "lone.pqr"), 2, ["lone.pqr", "--topology"]),
    ("volume-model-negative", ("volume", TWELVE, "--out", "v.mrc", "--shape", 16,
                               "--voxel-size", 1, "--model", "-1"), 2, ["--model"]),
    # input: files, selections, plans that cannot render (3)
    ("missing-file", _render(BAD / "does_not_exist.pdb"), 3, ["does_not_exist.pdb", "no such file"]),
    ("a-directory", _render(GOOD), 3, ["is a directory", "*.pdb"]),
    ("negative-extra-b", _twelve("--b-factor", "-50"), 3, ["-50", "negative"]),
    ("empty", _render(BAD / "empty.pdb"), 3, ["empty.pdb", "no atom records"]),
    ("garbage", _render(BAD / "garbage.pdb"), 3, ["garbage.pdb", "no atom records"]),
    ("not-gzip", _render(BAD / "binary.pdb.gz"), 3, ["binary.pdb.gz"]),
    ("nan-coordinates", _render(BAD / "nan_coordinates.pdb"), 3, ["nan_coordinates.pdb", "NaN"]),
    ("truncated-mmcif", _render(BAD / "truncated.cif"), 3, ["truncated.cif", "not a readable"]),
    ("malformed-mmcif", _render(BAD / "malformed.cif"), 3, ["malformed.cif", "_atom_site"]),
    ("not-cif", _render(BAD / "not_a_structure.cif"), 3, ["not_a_structure.cif", "data_"]),
    ("unknown-element-qq", _render(BAD / "unknown_element_qq.pdb"), 3,
     ["'QQ'", "QQ1", "--exclude QQ"]),
    ("element-x", _render(BAD / "element_x.pdb"), 3, ["element X", "atom UNK", "--exclude X"]),
    ("no-element-unknown-name", _render(BAD / "no_element_unknown_name.pdb"), 3,
     ["XQ1", "--exclude"]),
    ("duplicate-atoms", _render(BAD / "duplicate_atoms.pdb"), 3, ["duplicate_atoms.pdb", "twice"]),
    ("unsupported-element", _render(BAD / "unsupported_element.pdb"), 3, ["Es"]),
    ("models-differ", _render(BAD / "models_differ.pdb"), 3, ["different atoms"]),
    ("atom-counts-differ", _render(TWELVE, BAD / "fewer_atoms.pdb"), 3,
     ["fewer_atoms.pdb", "10 vs 12 atoms"]),
    ("elements-differ", _render(TWELVE, TWELVE, BAD / "different_elements.pdb"), 3,
     ["different_elements.pdb", "atoms differ"]),
    ("morph-atoms-differ", _render(TWELVE, BAD / "fewer_atoms.pdb", extra=("--morph", 5)), 3,
     ["fewer_atoms.pdb", "atoms differ"]),
    ("glob-matches-nothing", _render(BAD / "nothing_*.pdb"), 3, ["nothing_*.pdb", "no files match"]),
    ("selection-empty", _twelve("--select", "resname XYZ"), 3, ["resname XYZ", "leaves no atoms"]),
    ("selection-syntax", _twelve("--select", "name CA and ((("), 3, ["selection", "name CA and"]),
    ("exclude-everything", _render(BAD / "only_water.pdb", extra=("--exclude", "resname HOH")), 3,
     ["only_water.pdb", "leaves no atoms"]),
    ("weights-nan", _render(*PAIR, extra=("--weights", BAD / "weights_nan.csv")), 3,
     ["weights_nan.csv", "finite"]),
    ("weights-negative", _render(*PAIR, extra=("--weights", BAD / "weights_negative.csv")),
     3, ["weights_negative.csv", ">= 0"]),
    ("weights-text", _render(*PAIR, extra=("--weights", BAD / "weights_text.csv")), 3,
     ["weights_text.csv", "'heavy' is not a number"]),
    ("weights-zero", _render(*PAIR, extra=("--weights", BAD / "weights_zero.csv")), 3,
     ["weights_zero.csv", "every weight is 0"]),
    ("weights-missing", _render(*PAIR, extra=("--weights", BAD / "weights_missing.csv")), 3,
     ["weights_missing.csv", "no weight for model_b.pdb"]),
    ("psf-as-trajectory", _render(PSF, extra=("--topology", PSF)), 3,
     ["adk.psf", "topology (PSF) given as a trajectory"]),
    ("frames-past-end", _render(DCD, extra=("--topology", PSF, "--frames", "0:500")), 3,
     ["adk_dims.dcd", "0:500", "98 frames"]),
    ("frames-empty", _render(DCD, extra=("--topology", PSF, "--frames", "5:2")), 3,
     ["no frames selected", "5:2"]),
    ("frames-text", _render(DCD, extra=("--topology", PSF, "--frames", "a:b")), 3, ["integers"]),
    ("frames-step-zero", _render(DCD, extra=("--topology", PSF, "--frames", "0:10:0")), 3,
     ["STEP"]),
    ("trajectory-other-atoms", _render(DATA / "adk_oplsaa.xtc", extra=("--topology", PSF)), 3,
     ["adk_oplsaa.xtc"]),
    ("stray-atom-small-molecule", _render(BAD / "stray_atom_small.pdb"), 3,
     ["1 of 13 atoms fall outside", "far from the rest", "--outside clip"]),
    ("coordinate-9.9e30", _render(BAD / "huge_coordinate.pdb"), 3, ["fall outside"]),
    ("molecule-larger-than-box", _render(BAD / "far_apart.pdb"), 3,
     ["fall outside", "span 180 A"]),
    ("outside-error-policy", _render(BAD / "stray_atom.pdb", extra=("--outside", "error")), 3,
     ["1 of 139 atoms fall outside"]),
    ("grid-larger-than-memory", _render(TWELVE, shape=100000), 3, ["MiB", "--shape"]),
    ("info-missing", ("info", "nothing.zarr"), 3, ["nothing.zarr", "no such store"]),
    ("info-not-a-store", ("info", GOOD), 3, ["not a cryoensemble store"]),
    ("info-a-file", ("info", TWELVE), 3, ["twelve_atoms.pdb", "is a file"]),
    ("volume-out-directory", ("volume", TWELVE, "--out", BAD, "--shape", 16, "--voxel-size", 1),
     3, ["is a directory"]),
    ("model-out-of-range", ("volume", TWELVE, "--out", "v.mrc", "--shape", 16, "--voxel-size", 1,
                            "--model", 3), 3, ["model_index 3 is out of range"]),
    ("morph-one-step", _render(TWELVE, TWELVE, extra=("--morph", 1)), 3, ["n_conformations"]),
    ("voxel-size-in-nm", _render(DATA / "1uao.pdb", voxel=0.1), 3, ["fall outside", "0.1 A voxels"]),
    ("images-zero-particles", ("images", TWELVE, "--out", "p.zarr", "--n-images", 0, "--box", 32,
                               "--pixel-size", 1), 3, ["n_images"]),
    ("export-not-a-store", ("export", GOOD, "--relion", "relion_out"), 3, [str(GOOD)]),
    # infrastructure (4)
    ("scheduler-file-missing", _twelve("--scheduler-file", "no_scheduler.json"), 4,
     ["no_scheduler.json", "no such file"]),
]


@pytest.mark.parametrize("argv, code, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(cli, tmp_path, argv, code, words):
    before = _snapshot(tmp_path, BAD, GOOD)
    status, out, err = cli(*argv)
    assert status == code, err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err and not out
    for word in words:
        assert word in err, (word, err)
    assert _snapshot(tmp_path, BAD, GOOD) == before
    assert not _stores(tmp_path)


def test_full_disk_names_the_file():
    import errno

    from cryoensemble.cli import exit_code_and_message

    error = OSError(errno.ENOSPC, "No space left on device", "/data/s.zarr/potential/c/3/0/0/0")
    code, line = exit_code_and_message(error)
    assert code == 4 and "/data/s.zarr/potential/c/3/0/0/0" in line and "no space left" in line


def test_corpus_size():
    assert len(CASES) >= 40


def test_store_path_problems(cli, tmp_path):
    (tmp_path / "a_file").write_text("precious")
    (tmp_path / "not_a_store").mkdir()
    (tmp_path / "not_a_store" / "notes.txt").write_text("precious")
    before = _snapshot(tmp_path)
    for out, words in [("a_file", "is a file"), ("not_a_store", "not a cryoensemble store"),
                       ("a_file/sub.zarr", "is a file")]:
        status, _, err = cli(*_render(TWELVE, out=tmp_path / out))
        assert status == 3 and words in err and err.count("\n") == 1, err
    assert _snapshot(tmp_path) == before and not _stores(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_read_only_output_folder(cli, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        status, _, err = cli(*_render(TWELVE, out=locked / "out.zarr"))
        assert status == 3 and "not writable" in err and str(locked) in err
        status, _, err = cli("volume", TWELVE, "--out", locked / "v.mrc", "--shape", 16,
                             "--voxel-size", 1)
        assert status == 3 and "not a writable directory" in err
    finally:
        locked.chmod(0o755)
    assert not os.listdir(locked)


def test_volume_out_exists_needs_overwrite(cli, tmp_path):
    (tmp_path / "v.mrc").write_text("precious")
    status, _, err = cli("volume", TWELVE, "--out", "v.mrc", "--shape", 16, "--voxel-size", 1)
    assert status == 2 and "--overwrite" in err
    assert (tmp_path / "v.mrc").read_text() == "precious"


def test_truncated_trajectory(cli, tmp_path):
    cut = tmp_path / "cut.dcd"
    data = DCD.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    status, _, err = cli(*_render(cut, shape=64, voxel=1.5,
                                  extra=("--topology", PSF, "--frames", "0:98")))
    assert status == 3 and "cut.dcd" in err and err.count("\n") == 1, err
    assert "reach past the trajectory's" in err
    assert cut.stat().st_size == len(data) // 2 and not _stores(tmp_path)


def test_no_gpu_is_an_infrastructure_error(cli, tmp_path):
    from cryoensemble.distributed._checks import visible_gpus

    if visible_gpus():
        pytest.skip("this machine has GPUs")
    status, _, err = cli(*_twelve("--gpus", "1"))
    assert status == 4 and "--gpus 1" in err and "no" not in err.split(":")[0], err
    assert "0 NVIDIA GPU" in err and not _stores(tmp_path)


def test_unreachable_scheduler_fails_fast(cli, tmp_path):
    import dask.config

    start = time.perf_counter()
    with dask.config.set({"cryoensemble.scheduler-timeout": "2s"}):
        status, _, err = cli("render", TWELVE, "--out", "s.zarr", "--shape", 16,
                             "--voxel-size", 1, "--scheduler-address", "tcp://127.0.0.1:9")
    assert status == 4 and "tcp://127.0.0.1:9" in err and "cannot reach" in err, err
    assert err.count("\n") == 1 and time.perf_counter() - start < 20
    assert not _stores(tmp_path)


# --- inputs that render, correctly, with what they need said -----------------------------


def _volume(cli, path, *extra, shape=32):
    out = f"{os.path.basename(str(path))}-{len(extra)}.mrc"
    status, stdout, err = cli("volume", path, "--out", out, "--shape", shape, "--voxel-size", 1,
                              *extra)
    assert status == 0, err
    with mrcfile.open(out) as handle:
        return handle.data.astype(np.float64), stdout, err


def test_one_stray_atom_warns_and_leaves_the_map_of_the_rest(cli, tmp_path):
    rest = tmp_path / "rest.pdb"
    rest.write_text("".join(line for line in open(BAD / "stray_atom.pdb") if "9000.000" not in line))
    clean, _, quiet = _volume(cli, rest)
    stray, _, warned = _volume(cli, BAD / "stray_atom.pdb")
    assert not quiet
    assert "warning" in warned and "1 of 139 atoms fall outside" in warned
    assert warned.count("\n") == 1
    np.testing.assert_allclose(stray, clean, rtol=0, atol=1e-6 * clean.max())
    assert clean.sum() > 0


def test_exclude_drops_an_unknown_element(cli, tmp_path):
    excluded, out, _ = _volume(cli, BAD / "element_x.pdb", "--exclude", "X", shape=24)
    reference, _, _ = _volume(cli, TWELVE, shape=24)
    assert "12 atoms" in out
    np.testing.assert_allclose(excluded, reference, rtol=0, atol=1e-6 * reference.max())


def test_keep_frame_puts_the_map_on_the_model(cli, tmp_path):
    """With --keep-frame, the map's centre of mass is the atoms' (weighted by their
    scattering), in the file's coordinates (voxel i at (i - n // 2) A)."""
    volume, _, _ = _volume(cli, TWELVE, "--keep-frame", shape=32)
    structure = gemmi.read_structure(str(TWELVE))
    atoms = [a for r in structure[0][0] for a in r]
    weights = np.array([sum(a.element.c4322.a) for a in atoms])
    expected = (weights[:, None] * np.array([a.pos.tolist() for a in atoms])).sum(0) / weights.sum()
    axes = [(np.arange(n) - n // 2) * 1.0 for n in volume.shape]  # z, y, x
    centre = [(volume.sum(axis=tuple(j for j in range(3) if j != i)) * axes[i]).sum() / volume.sum()
              for i in range(3)]
    np.testing.assert_allclose(centre[::-1], expected, atol=0.05)


def test_select_works_for_pdb_inputs(cli):
    _, out, _ = _volume(cli, DATA / "1uao.pdb", "--select", "name CA", shape=24)
    n_ca = sum(1 for r in gemmi.read_structure(str(DATA / "1uao.pdb"))[0][0] for a in r
               if a.name == "CA")
    assert f"{n_ca} atoms" in out and n_ca == 10


def test_silicon_in_a_psf_is_silicon():
    from cryoensemble.sources import TrajectorySource

    source = TrajectorySource(BAD / "silicon.psf", BAD / "silicon.crd")
    expected = [gemmi.Element(e).atomic_number for e in ("Si", "Si", "O", "S")]
    assert source.atomic_numbers.tolist() == expected


def test_lammps_data_elements_from_masses():
    from cryoensemble.sources import TrajectorySource

    data = BAD / "lammps.data"
    source = TrajectorySource(data, data)
    expected = [gemmi.Element(e).atomic_number for e in ("Si", "O", "O")]
    assert source.atomic_numbers.tolist() == expected


def test_negative_frames_take_the_last_ones(cli):
    status, out, err = cli(*_render(DCD, shape=64, voxel=1.5,
                                    extra=("--topology", PSF, "--frames", "-10:")))
    assert status == 0, err
    assert "10 (0 already done, 10 to render)" in out


def test_huge_atom_count_refused_before_any_worker(tmp_path):
    from distributed.system import MEMORY_LIMIT

    from cryoensemble.errors import PlanError
    from cryoensemble.distributed import render_ensemble
    from cryoensemble.sources import StructureFilesSource, TiledSource

    unit = StructureFilesSource([TWELVE])
    n_workers = 64
    copies = int(2 * MEMORY_LIMIT / n_workers / (12 * 6**3 * 6)) + 1
    side = int(np.ceil(copies ** (1 / 3)))
    source = TiledSource(unit, (side, side, side), np.eye(3) * 0.01)
    with pytest.raises(PlanError, match="MiB"):
        render_ensemble(source, shape=32, voxel_size=1.0, store=tmp_path / "s.zarr",
                        n_workers=n_workers, n_batches=1, dry_run=True)
    assert not _stores(tmp_path)


def test_ctrl_c_exits_130_and_the_store_resumes(tmp_path):
    command = [sys.executable, "-m", "cryoensemble", "render", str(DCD), "--topology", str(PSF),
               "--frames", "0:8", "--out", str(tmp_path / "s.zarr"), "--shape", "48",
               "--voxel-size", "2", "--workers", "1", "--batch-size", "1"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env, cwd=tmp_path)
    deadline = time.time() + 120
    chunks = tmp_path / "s.zarr" / "potential" / "c"
    # Interrupted while rendering (the store created, the first volumes being written).
    while time.time() < deadline and not (chunks.exists() and any(chunks.rglob("*"))):
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "interrupted" in err and "run the same command" in err
    again = subprocess.run(command + ["--quiet"], capture_output=True, text=True, env=env,
                           cwd=tmp_path, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "(8 done)" in again.stdout
    shutil.rmtree(tmp_path / "s.zarr")


def test_a_dying_worker_is_reported_as_it_happens():
    import io

    from distributed import Client

    from cryoensemble.distributed import make_local_cluster
    from cryoensemble.distributed.cluster import reporting_worker_losses

    stream = io.StringIO()
    with make_local_cluster(n_workers=1) as cluster, Client(cluster) as client:
        client.wait_for_workers(1)
        (address,) = client.scheduler_info()["workers"]
        with reporting_worker_losses(client, stream):
            future = client.submit(os._exit, 1, workers=[address], pure=False)
            deadline = time.time() + 30
            while time.time() < deadline and "died" not in stream.getvalue():
                time.sleep(0.1)
    line = stream.getvalue()
    assert line.count("\n") == 1 and f"worker {address} died" in line
    assert "retried" in line and "kills 4 workers" in line and "_exit" in line
    del future


def test_scheduler_lost_mid_run_is_one_line_and_exit_4(tmp_path):
    bin_dir = os.path.dirname(sys.executable)
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu",
               XLA_PYTHON_CLIENT_PREALLOCATE="false")
    scheduler_file = tmp_path / "scheduler.json"
    scheduler = subprocess.Popen(
        [os.path.join(bin_dir, "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
         "--dashboard-address", ":0", "--scheduler-file", str(scheduler_file)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = render = None
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not scheduler_file.exists():
            time.sleep(0.2)
        worker = subprocess.Popen(
            [os.path.join(bin_dir, "dask"), "worker", "--scheduler-file", str(scheduler_file),
             "--nthreads", "1"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        store = tmp_path / "s.zarr"
        render = subprocess.Popen(
            [sys.executable, "-m", "cryoensemble", "render", str(DCD), "--topology", str(PSF),
             "--out", str(store), "--shape", "64", "--voxel-size", "1.5", "--batch-size", "1",
             "--scheduler-file", str(scheduler_file), "--quiet"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
        while time.time() < deadline + 60 and not (store / "zarr.json").exists():
            time.sleep(0.2)
        scheduler.kill()
        _, err = render.communicate(timeout=120)
    finally:
        for process in (render, worker, scheduler):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
    assert render.returncode == 4, err[-2000:]
    assert "Traceback" not in err and "lost the Dask scheduler" in err
    assert err.count("\n") == 2 and "run the same command again" in err


def test_tls_scheduler_through_the_cli(cli, tmp_path):
    """A TLS scheduler: the CLI connects with --tls-* files, and is refused (exit 4, one
    line) without them."""
    from distributed import LocalCluster, Security

    security = Security.temporary()  # PEM texts of a CA and a certificate it signed
    files = {}
    for option, text in (("--tls-ca-file", security.tls_ca_file),
                         ("--tls-cert", security.tls_client_cert),
                         ("--tls-key", security.tls_client_key)):
        path = tmp_path / option.strip("-")
        path.write_text(text)
        files[option] = path
    tls = [item for pair in files.items() for item in pair]
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tls://",
                      security=security, dashboard_address=None) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tls://")
        status, out, err = cli("render", TWELVE, "--out", "tls.zarr", "--shape", 16,
                               "--voxel-size", 1, "--scheduler-address", address, "--quiet",
                               *tls)
        assert status == 0, err
        assert "(1 done)" in out
        status, _, err = cli("render", TWELVE, "--out", "plain.zarr", "--shape", 16,
                             "--voxel-size", 1, "--scheduler-address", address)
    assert status == 4 and address in err and err.count("\n") == 1, err
    assert not os.path.exists(tmp_path / "plain.zarr")


def test_debug_shows_the_traceback(cli):
    from cryoensemble.errors import StructureReadError

    for argv in (("--debug", *_render(BAD / "empty.pdb")), (*_render(BAD / "empty.pdb"), "--debug")):
        with pytest.raises(StructureReadError, match="no atom records"):
            cli(*argv)


def test_fft_renderer_wraps_atoms_outside_and_says_so(cli):
    from cryoensemble.constants import PengScatteringFactorParameters
    from cryoensemble.simulator import FFTAtomRenderFn, IndependentAtomVolume

    status, _, err = cli(*_render(BAD / "far_apart.pdb", extra=("--renderer", "fft")))
    assert status == 3 and "wraps around to the opposite face" in err, err
    # And so it does: a carbon 2.5 A beyond the +x face (x from -8.5 to 7.5 A) peaks at
    # x = 10 - 16 = -6 A, voxel 2.
    volume = IndependentAtomVolume.from_tabulated_parameters(
        (np.array([[10.0, 0.0, 0.0]]),), PengScatteringFactorParameters(np.array([6])),
        b_factor_by_element=20.0)
    potential = np.asarray(FFTAtomRenderFn((16, 16, 16), 1.0, backend="jax")(volume))
    assert int(np.argmax(potential.sum(axis=(0, 1)))) == 2
