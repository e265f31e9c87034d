"""Ensemble rendering through real Dask schedulers and workers into real zarr stores."""

import functools
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import xarray as xr

from helpers import DATA, relative_l2
from cryoensemble.constants import PengScatteringFactorParameters
from cryoensemble.distributed import plan_render, render_ensemble, run_plan
from cryoensemble.simulator import (
    GaussianMixtureRenderFn,
    GaussianMixtureVolume,
    PositionJitteredVolume,
)
from cryoensemble.sources import (
    MorphSource,
    MultiModelSource,
    ParametrizationSource,
    StructureFilesSource,
    TrajectorySource,
)
from cryoensemble.store import StoreMismatchError


@pytest.fixture(scope="module")
def client(process_cluster):
    from distributed import Client

    with Client(process_cluster) as dask_client:
        yield dask_client


@functools.lru_cache(maxsize=4)
def _jitted_render(shape, voxel_size):
    import jax

    render = GaussianMixtureRenderFn(shape, voxel_size)
    return jax.jit(lambda v: render(v))


def direct_render(positions, atomic_numbers, shape, voxel_size):
    """The core's jitted render of one conformation, as a notebook user would call it
    (conformations of one mixture share the compiled function)."""
    volume = GaussianMixtureVolume.from_tabulated_parameters(
        positions, PengScatteringFactorParameters(atomic_numbers)
    )
    return np.asarray(_jitted_render(tuple(shape), float(voxel_size))(volume))


def centre_of(source):
    return source.read(0, 1)[0].astype(np.float64).mean(axis=0)


def potential_chunk_files(store, index):
    root = os.path.join(store, "potential", "c", str(index))
    return [os.path.join(d, f) for d, _, files in os.walk(root) for f in files]


def test_trajectory_end_to_end_resume_and_repair(client, tmp_path):
    store = str(tmp_path / "dims.zarr")
    source = TrajectorySource(DATA / "adk.psf", DATA / "adk_dims.dcd")
    # A coarse grid: the open frames' atoms reach 36 A from the centre.
    shape, voxel_size = (48, 48, 48), 1.6
    dataset = render_ensemble(source, shape=shape, voxel_size=voxel_size, store=store,
                              client=client)
    assert dataset.sizes == {"conformation": 98, "z": 48, "y": 48, "x": 48}
    assert int(dataset["rendered"].sum()) == 98
    np.testing.assert_array_equal(dataset["frame"], np.arange(98))
    assert np.all(np.diff(dataset["time_ps"].values) > 0)
    np.testing.assert_allclose(dataset["z"], (np.arange(48) - 24) * voxel_size)
    assert dataset["potential"].attrs["units"] == "angstrom-2"
    assert dataset["time_ps"].attrs["units"] == "ps" and dataset["z"].attrs["units"] == "angstrom"
    parameters = json.loads(dataset.attrs["cryoensemble_parameters"])
    assert parameters["voxel_size"] == voxel_size and parameters["shape"] == list(shape)
    assert set(parameters["inputs_sha256"]) == {str(DATA / "adk.psf"), str(DATA / "adk_dims.dcd")}
    assert all(len(h) == 64 for h in parameters["inputs_sha256"].values())
    assert "jax" in json.loads(dataset.attrs["versions"]) and dataset.attrs["created"]
    assert dataset.attrs["scattering_table"].startswith("Peng")

    # Every stored volume equals a direct core render of the same conformation.
    positions = source.read(0, 98) - centre_of(source).astype(np.float32)
    stored = xr.open_zarr(store)["potential"].values
    for i in range(98):
        assert relative_l2(stored[i], direct_render(positions[i], source.atomic_numbers, shape, voxel_size)) <= 1e-6

    # Rerun: nothing to render, nothing rewritten.
    before = {f: os.stat(f).st_mtime_ns for i in range(98) for f in potential_chunk_files(store, i)}
    arguments = dict(shape=shape, voxel_size=voxel_size, store=store)
    assert run_plan(plan_render(source, **arguments), client).task_results == []
    after = {f: os.stat(f).st_mtime_ns for f in before}
    assert before == after

    # Delete two conformations' chunks: exactly those two are rendered again.
    for index in (7, 61):
        for path in potential_chunk_files(store, index):
            os.remove(path)
    plan = render_ensemble(source, shape=shape, voxel_size=voxel_size, store=store, dry_run=True)
    assert plan.n_done == 96
    assert run_plan(plan, client).rendered == [7, 61]
    restored = xr.open_zarr(store)["potential"].values
    np.testing.assert_array_equal(restored, stored)


def test_store_with_other_parameters_is_refused_then_overwritten(client, tmp_path):
    store = str(tmp_path / "nmr.zarr")
    source = MultiModelSource(DATA / "nmr_neopetrosiamide.pdb")
    render_ensemble(source, shape=40, voxel_size=1.0, store=store, client=client)
    with pytest.raises(StoreMismatchError, match="shape") as info:
        render_ensemble(source, shape=36, voxel_size=1.0, store=store, client=client)
    assert "\n" not in str(info.value)
    assert xr.open_zarr(store).sizes["z"] == 40  # untouched
    dataset = render_ensemble(source, shape=36, voxel_size=1.0, store=store, client=client,
                              overwrite=True)
    assert dataset.sizes["z"] == 36 and int(dataset["rendered"].sum()) == 24
    np.testing.assert_array_equal(dataset["model"], np.arange(1, 25))


def test_two_renders_at_once_on_one_client_both_complete(client, tmp_path):
    """Two stores rendered at the same time through one client (two notebook cells, two
    threads): both end with every conformation written, each equal to the other. Tasks
    named by their range alone let the second render take the first's results and leave
    its store empty."""
    import concurrent.futures

    source = MultiModelSource(DATA / "nmr_neopetrosiamide.pdb")
    stores = [str(tmp_path / f"{name}.zarr") for name in ("a", "b")]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(
            lambda store: render_ensemble(source, shape=30, voxel_size=1.0, store=store,
                                          client=client, outside="clip"), stores))
    for dataset in results:
        assert int(dataset["rendered"].sum()) == 24
    first, second = (xr.open_zarr(store)["potential"].values for store in stores)
    assert np.abs(first).sum(axis=(1, 2, 3)).min() > 0  # no empty conformation
    np.testing.assert_array_equal(first, second)


def test_never_deletes_a_directory_that_is_not_a_store(client, tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    source = MultiModelSource(DATA / "nmr_neopetrosiamide.pdb")
    with pytest.raises(StoreMismatchError, match="not a cryoensemble store"):
        render_ensemble(source, shape=32, voxel_size=1.0, store=str(precious), client=client,
                        overwrite=True)
    assert (precious / "notes.txt").read_text() == "keep me"


def test_files_with_weights_morph_and_float16(client, tmp_path):
    weights = tmp_path / "weights.csv"
    weights.write_text("file,weight\nadk_closed.pdb,0.25\nadk_open.pdb,0.75\n")
    files = StructureFilesSource([DATA / "adk_closed.pdb", DATA / "adk_open.pdb"], weights=weights)
    dataset = render_ensemble(files, shape=72, voxel_size=1.2, store=str(tmp_path / "f.zarr"),
                              client=client, dtype="float16")
    assert dataset["potential"].dtype == np.float16
    assert list(dataset["file"].values) == ["adk_closed.pdb", "adk_open.pdb"]
    np.testing.assert_allclose(dataset["weight"], [0.25, 0.75])

    morph = MorphSource(DATA / "adk_closed.pdb", DATA / "adk_open.pdb", 5)
    stack = render_ensemble(morph, shape=72, voxel_size=1.2, store=str(tmp_path / "m.zarr"),
                            client=client)
    np.testing.assert_allclose(stack["morph_t"], np.linspace(0, 1, 5))
    centre = centre_of(morph)
    # The morph's end points are the two structures, in the same frame.
    for index, path in ((0, "adk_closed.pdb"), (4, "adk_open.pdb")):
        positions = files.read(*(0, 1) if index == 0 else (1, 2))[0] - centre.astype(np.float32)
        expected = direct_render(positions, morph.atomic_numbers, (72, 72, 72), 1.2)
        assert relative_l2(stack["potential"][index].values, expected) <= 1e-6
    assert relative_l2(dataset["potential"][0].values.astype(np.float32),
                       stack["potential"][0].values) <= 1e-3  # float16 rounding


def test_stochastic_parametrization(client, tmp_path):
    positions = np.random.default_rng(0).uniform(-6, 6, (40, 3))
    mean = GaussianMixtureVolume(positions, 1.0, 0.4)
    model = PositionJitteredVolume(mean, 0.5)
    source = ParametrizationSource(model, 6, seed=3)
    dataset = render_ensemble(source, shape=24, voxel_size=1.0, store=str(tmp_path / "s.zarr"),
                              client=client, center=None)
    stored = dataset["potential"].values
    import jax

    keys = jax.random.split(jax.random.key(3), 6)
    render = GaussianMixtureRenderFn((24, 24, 24), 1.0)
    for i in (0, 5):
        assert relative_l2(stored[i], render(model.to_representation(keys[i]))) <= 1e-6
    assert relative_l2(stored[0], stored[1]) > 1e-2  # samples differ


def test_split_atoms_by_slabs_and_groups_gives_the_unsplit_volume(client, tmp_path):
    """The solvated AdK box (one frame), 8 slabs (bitwise) and 8 atom groups (1e-6)."""
    source = TrajectorySource(DATA / "adk_oplsaa.pdb", DATA / "adk_oplsaa.xtc", frames="0:1")
    assert source.n_atoms == 36597
    # The solvated box is cropped on purpose (the protein and its nearest water).
    kwargs = dict(shape=(96, 96, 96), voxel_size=1.0, client=client, outside="clip")
    whole = render_ensemble(source, store=str(tmp_path / "whole.zarr"), **kwargs)
    slabs = render_ensemble(source, store=str(tmp_path / "slabs.zarr"), n_batches=8, **kwargs)
    groups = render_ensemble(source, store=str(tmp_path / "groups.zarr"), n_batches=8,
                             split="atoms", **kwargs)
    assert slabs["potential"].encoding["shards"] == (1, 12, 96, 96)  # one object per slab
    reference = whole["potential"].values
    np.testing.assert_array_equal(slabs["potential"].values, reference)
    assert relative_l2(groups["potential"].values, reference) <= 1e-6
    assert int(slabs["rendered"].sum()) == int(groups["rendered"].sum()) == 1


def test_uneven_slabs_of_several_conformations_give_the_unsplit_volumes(client, tmp_path):
    """5 slabs of 10 planes over 48 (the last one 8 planes, rendered at the common height
    and cut), several conformations: each one the whole render, bit for bit on CPU."""
    source = MorphSource(DATA / "adk_closed.pdb", DATA / "adk_open.pdb", 3)
    kwargs = dict(shape=(48, 48, 48), voxel_size=1.25, client=client, outside="clip")
    whole = render_ensemble(source, store=str(tmp_path / "whole.zarr"), **kwargs)
    slabs = render_ensemble(source, store=str(tmp_path / "slabs.zarr"), n_batches=5, **kwargs)
    assert slabs["potential"].encoding["shards"] == (1, 10, 48, 48)
    np.testing.assert_array_equal(slabs["potential"].values, whole["potential"].values)
    assert int(slabs["rendered"].sum()) == len(source)


def test_slabs_are_spread_over_the_workers(tmp_path):
    """As many slabs as twice the task slots (a group dask does not queue): each worker
    is given its share, rather than the one holding a shared source being given them all
    (work stealing, off here, would move only some away later)."""
    import dask
    from distributed import Client

    from cryoensemble.distributed import make_local_cluster

    source = StructureFilesSource([DATA / "adk_closed.pdb"])
    with dask.config.set({"distributed.scheduler.work-stealing": False}), \
            make_local_cluster(n_workers=2) as cluster, Client(cluster) as client:
        plan = plan_render(source, shape=(48, 48, 48), voxel_size=1.25, outside="clip",
                           store=str(tmp_path / "s.zarr"), n_workers=2, n_batches=4)
        done = run_plan(plan, client).task_results
    per_worker = {}
    for slab in done[0]["slab_results"]:
        per_worker[slab["pid"]] = per_worker.get(slab["pid"], 0) + 1
    assert sorted(per_worker.values()) == [2, 2], per_worker


def test_cli_against_a_dask_scheduler_and_worker_started_as_subprocesses(tmp_path):
    scheduler_file = tmp_path / "scheduler.json"
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false", JAX_PLATFORMS="cpu")
    bin_dir = os.path.dirname(sys.executable)
    scheduler = subprocess.Popen(
        [os.path.join(bin_dir, "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
         "--dashboard-address", ":0", "--scheduler-file", str(scheduler_file)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    worker = None
    try:
        for _ in range(300):
            if scheduler_file.exists() and scheduler_file.stat().st_size:
                break
            time.sleep(0.1)
        address = json.loads(scheduler_file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        worker = subprocess.Popen(
            [os.path.join(bin_dir, "dask"), "worker", address, "--nworkers", "1",
             "--nthreads", "1", "--no-dashboard"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        store = tmp_path / "cli.zarr"
        command = [sys.executable, "-m", "cryoensemble", "render",
                   str(DATA / "nmr_neopetrosiamide.pdb"), "--out", str(store), "--shape", "32",
                   "--voxel-size", "1.0", "--scheduler-address", address, "--quiet"]
        dry = subprocess.run(command + ["--dry-run"], capture_output=True, text=True, timeout=120)
        assert dry.returncode == 0, dry.stderr
        assert "tasks" in dry.stdout and "memory per task" in dry.stdout and not store.exists()
        run = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        assert "24 conformations" in run.stdout
        info = subprocess.run([sys.executable, "-m", "cryoensemble", "info", str(store)],
                              capture_output=True, text=True, timeout=120)
        assert info.returncode == 0 and "24 / 24" in info.stdout
        bad = subprocess.run(command[:-3] + ["--frames", "0:5"], capture_output=True, text=True,
                             timeout=120)
        assert bad.returncode == 2 and "--frames needs --topology" in bad.stderr
    finally:
        for process in (worker, scheduler):
            if process is not None:
                process.terminate()
                process.wait(timeout=30)


def test_fft_renderer_through_dask(client, tmp_path):

    from cryoensemble.simulator import FFTAtomRenderFn, IndependentAtomVolume
    from cryoensemble.simulator import split_atoms_by_element

    source = MultiModelSource(DATA / "nmr_neopetrosiamide.pdb")
    dataset = render_ensemble(source, shape=32, voxel_size=1.5, store=str(tmp_path / "f.zarr"),
                              client=client, renderer="fft", extra_b_factor=30.0)
    assert json.loads(dataset.attrs["cryoensemble_parameters"])["renderer"]["name"] == "fft"
    positions = source.read(5, 6)[0] - centre_of(source).astype(np.float32)
    by_element, elements = split_atoms_by_element(source.atomic_numbers, positions)
    volume = IndependentAtomVolume.from_tabulated_parameters(
        by_element, PengScatteringFactorParameters(elements), b_factor_by_element=30.0
    )
    # The JAX engine, as the workers use: jax-finufft's OpenMP next to the forked
    # LocalCluster of this process crashed once in CI.
    expected = np.asarray(FFTAtomRenderFn((32, 32, 32), 1.5, backend="jax")(volume))
    assert relative_l2(dataset["potential"][5].values, expected) <= 1e-5
    with pytest.raises(ValueError, match="fft"):
        render_ensemble(source, shape=32, voxel_size=1.5, store=str(tmp_path / "g.zarr"),
                        client=client, renderer="fft", n_batches=2)


def test_cluster_tuning_reaches_the_workers_through_dask_config():
    """A `cryoensemble.` key set on the client when the cluster starts is what each worker
    process reads (the defaults come from the package's cryoensemble.yaml)."""
    import dask.config
    from distributed import Client

    from cryoensemble.distributed import make_local_cluster

    assert dask.config.get("cryoensemble.device-to-host") == "pinned"
    assert dask.config.get("cryoensemble.store.lease-ttl") == "60s"
    with dask.config.set({"cryoensemble.device-to-host": "async"}):
        cluster = make_local_cluster(n_workers=1)
    with cluster, Client(cluster) as client:
        seen = client.run(lambda: dask.config.get("cryoensemble.device-to-host"))
    assert list(seen.values()) == ["async"]


@pytest.mark.parametrize("extra_b_factor", [0.0, 40.0])
def test_planned_windows_are_the_workers_support_groups(tmp_path, extra_b_factor):
    """The client sizes windows per element and counts atoms per element; the workers'
    support plan (every atom sized and put in order) must give the same groups, which
    the store records."""
    from cryoensemble.distributed import tasks

    source = TrajectorySource(DATA / "adk_oplsaa.pdb", DATA / "adk_oplsaa.xtc", frames="0:1")
    plan = plan_render(source, shape=64, voxel_size=1.2, store=str(tmp_path / "s.zarr"),
                       extra_b_factor=extra_b_factor, outside="clip")
    groups = tasks.support_plan(source, plan.spec).groups
    assert len(groups) > 1 and sum(n for n, _, _ in groups) == source.n_atoms
    assert (plan.window, plan.support_radius) == (max(k for _, _, k in groups),
                                                  max(r for _, r, _ in groups))
    assert plan.attributes["renderer_options"].endswith(
        ", ".join(f"{n} atoms {r:.3f} (k={k})" for n, r, k in groups))


def test_workers_plan_atoms_once_for_all_frames(tmp_path):
    """The per-atom plan (`AtomPlan`, ~400 MB for 10M atoms) is keyed by the atoms, not the
    frames: other frames of the same trajectory (also cycled or tiled) reuse it; another
    selection of atoms gets its own."""
    from cryoensemble.distributed import tasks
    from cryoensemble.sources import CycledSource, TiledSource

    def plan_of(source):
        spec = plan_render(source, shape=64, voxel_size=1.2, store=str(tmp_path / "s.zarr"),
                           outside="clip").spec
        return tasks.support_plan(source, spec)

    def trajectory(frames, selection="all"):
        return TrajectorySource(DATA / "adk_oplsaa.pdb", DATA / "adk_oplsaa.xtc", frames=frames,
                                selection=selection)

    first = plan_of(trajectory("0:1"))
    assert plan_of(trajectory("3:5")) is first
    assert plan_of(CycledSource(trajectory("1:2"), 4)) is first
    box = np.eye(3) * 80.0
    tiled = plan_of(TiledSource(trajectory("0:1"), (1, 1, 2), box))
    assert tiled is not first and plan_of(TiledSource(trajectory("2:3"), (1, 1, 2), box)) is tiled
    protein = plan_of(trajectory("0:1", selection="protein"))
    assert protein is not first and protein.n_atoms < first.n_atoms


def test_default_tasks_fit_a_cluster_with_little_memory_per_worker(tmp_path):
    """A cluster whose workers have 250 MB each: the default task (16 volumes of 160^3,
    256 MiB, on workers with room) shrinks to fit, rather than the render being refused
    (`check_memory`), and every conformation is rendered."""
    import dask
    from distributed import Client, LocalCluster

    from cryoensemble.sources import CycledSource

    source = CycledSource(TrajectorySource(DATA / "adk.psf", DATA / "adk_dims.dcd",
                                           frames="0:4"), 64)
    # The workers' memory limit is only reported, not enforced: JAX alone exceeds it.
    quiet = {f"distributed.worker.memory.{k}": False
             for k in ("target", "spill", "pause", "terminate")}
    with dask.config.set(quiet), LocalCluster(n_workers=1, threads_per_worker=1,
                                              memory_limit="250MB") as cluster, \
            Client(cluster) as client:
        roomy = plan_render(source, shape=160, voxel_size=1.0, store=str(tmp_path / "a.zarr"),
                            n_workers=1)
        assert roomy.memory_per_task_bytes > 250e6  # what the default used to be
        dataset = render_ensemble(source, shape=160, voxel_size=1.0, client=client,
                                  store=str(tmp_path / "s.zarr"))
        assert int(dataset["rendered"].sum()) == 64
        frame = direct_render(source.read(5, 6)[0] - centre_of(source).astype(np.float32),
                              source.atomic_numbers, (160, 160, 160), 1.0)
        assert relative_l2(dataset["potential"][5].values, frame) <= 1e-6


@pytest.mark.parametrize("frames, slots, edge, device", [
    (24000, 8, 96, True), (24000, 4, 96, True), (12000, 8, 128, True), (3000, 8, 256, True),
    (8000, 8, 96, True), (2000, 2, 96, False), (997, 3, 64, False)])
def test_default_tasks_give_every_slot_as_many(frames, slots, edge, device):
    """The default batch cuts a render into a multiple of the task slots' count of tasks
    (here, where the frames divide among the slots), so no worker runs a last task alone."""
    from cryoensemble.distributed.ensemble import default_batch_size

    batch = default_batch_size(frames, slots, edge**3 * 4, device)
    n_tasks = -(-frames // batch)
    assert n_tasks >= slots
    if frames % slots == 0:
        assert n_tasks % slots == 0, (batch, n_tasks)


def test_tasks_run_in_the_order_of_the_conformations(client, tmp_path):
    """A render's tasks start from its first conformations (dask alone runs independent
    tasks by name, from the last), so a stopped render leaves a prefix of the ensemble
    done; every conformation is rendered once."""
    from cryoensemble.sources import CycledSource

    source = CycledSource(TrajectorySource(DATA / "adk.psf", DATA / "adk_dims.dcd",
                                           frames="0:4"), 64)
    plan = plan_render(source, shape=24, voxel_size=3.0, store=str(tmp_path / "s.zarr"),
                       outside="clip").for_workers(2)
    assert plan.batch_size == 8 and len(plan.runs) == 8
    results = sorted(run_plan(plan, client).task_results, key=lambda r: r["started"])
    assert sorted(i for r in results for i in range(r["start"], r["stop"])) == list(range(64))
    starts = [r["start"] for r in results]
    assert starts[0] in (0, 8), starts
    assert np.mean(starts[:4]) < np.mean(starts[4:]), starts


def test_a_given_clients_workers_are_asked_while_the_client_plans(client, tmp_path, monkeypatch):
    """A cold GPU worker starts JAX to say whether it compresses on its device: with a
    client given, render_ensemble asks before planning, so the two overlap, and the
    render uses the answer."""
    import threading

    from cryoensemble.distributed import ensemble

    asked, answers = threading.Event(), []
    ask, plan = ensemble.workers_encode_on_device, ensemble.plan_render

    def asking(dask_client):
        asked.set()
        answers.append(ask(dask_client))
        return answers[-1]

    def planning(*args, **kwargs):
        # Asked after planning, the workers would not be asked yet: this waits in vain.
        assert asked.wait(30), "the workers were not asked while the client planned"
        return plan(*args, **kwargs)

    monkeypatch.setattr(ensemble, "workers_encode_on_device", asking)
    monkeypatch.setattr(ensemble, "plan_render", planning)
    source = TrajectorySource(DATA / "adk.psf", DATA / "adk_dims.dcd", frames="0:3")
    dataset = render_ensemble(source, shape=24, voxel_size=3.0, store=str(tmp_path / "s.zarr"),
                              client=client, outside="clip")
    assert answers == [False]  # CPU workers; asked once
    assert int(dataset["rendered"].sum()) == 3
    expected = direct_render(source.read(0, 1)[0] - centre_of(source).astype(np.float32),
                             source.atomic_numbers, (24, 24, 24), 3.0)
    assert relative_l2(dataset["potential"][0].values, expected) <= 1e-6
