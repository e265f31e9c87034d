"""deploy/: what can be checked without a cluster (job scripts, manifests, recipes)."""

import copy
import importlib.metadata
import importlib.resources
import importlib.util
import pathlib
import re
import shlex
import sys
import tomllib

import pytest
import yaml


ROOT = pathlib.Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# What every worker process needs, whatever starts it: several processes share a GPU.
WORKER_ENV = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false", "OMP_NUM_THREADS": "1"}


def load_launcher():
    spec = importlib.util.spec_from_file_location("deploy_slurm", DEPLOY / "slurm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- SLURM (dask-jobqueue) -------------------------------------------------------------

def test_slurm_job_script_runs_our_workers():
    pytest.importorskip("dask_jobqueue")
    slurm = load_launcher()
    args = slurm.build_parser().parse_args(
        ["traj.dcd", "--topology", "top.psf", "--out", "s.zarr", "--shape", "64",
         "--voxel-size", "1.0", "--jobs", "3", "--queue", "gpu", "--account", "lab",
         "--processes", "4", "--cores", "4", "--gpus-per-job", "2", "--walltime", "01:00:00"]
    )
    with slurm.make_cluster(args, scheduler_options={"dashboard_address": ":0"}) as cluster:
        script = cluster.job_script()
    directives = re.findall(r"^#SBATCH (.+)$", script, re.M)
    assert "-p gpu" in directives and "-A lab" in directives and "-t 01:00:00" in directives
    assert "--cpus-per-task=4" in directives
    # --gpus-per-job replaces the yaml's --gres rather than adding a second one.
    assert [d for d in directives if d.startswith("--gres")] == ["--gres=gpu:2"]
    for name, value in WORKER_ENV.items():
        assert f"export {name}={value}" in script
    worker = shlex.split(next(line for line in script.splitlines() if "dask_worker" in line))
    # Workers run this interpreter (the one with cryoensemble), single-threaded processes.
    assert worker[0] == sys.executable and worker[1:3] == ["-m", "distributed.cli.dask_worker"]
    assert worker[worker.index("--nthreads") + 1] == "1"
    assert worker[worker.index("--nworkers") + 1] == "4"
    assert slurm.workers_expected(args) == 12


def test_slurm_launcher_waits_for_workers_before_planning(tmp_path):
    """With no worker, the launcher stops at the wait with a clear message; the store is
    never planned or created."""
    from distributed import LocalCluster

    from cryoensemble.examples import example_path

    slurm = load_launcher()
    out = tmp_path / "stack.zarr"
    args = slurm.build_parser().parse_args(
        [example_path("adk_dims.dcd"), "--topology", example_path("adk.psf"), "--out",
         str(out), "--shape", "16", "--voxel-size", "4", "--frames", "0:2",
         "--min-workers", "1", "--wait-timeout", "1"]
    )
    with LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as cluster:
        with pytest.raises(TimeoutError, match="--wait-timeout: 0 of 1 workers"):
            slurm.render(args, cluster)
    assert not out.exists()


def test_jobqueue_yaml_is_a_jobqueue_config():
    dask_jobqueue = pytest.importorskip("dask_jobqueue")
    ours = yaml.safe_load((DEPLOY / "jobqueue.yaml").read_text())["jobqueue"]["slurm"]
    shipped = yaml.safe_load(
        (pathlib.Path(dask_jobqueue.__file__).parent / "jobqueue.yaml").read_text()
    )["jobqueue"]["slurm"]
    assert set(ours) <= set(shipped), f"unknown jobqueue.slurm keys: {set(ours) - set(shipped)}"


# --- Kubernetes (dask-kubernetes operator) ---------------------------------------------

def strict(schema):
    """The CRD's schema with unknown fields refused (the API server prunes or rejects
    them; jsonschema would otherwise accept any typo)."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if ("properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


@pytest.fixture(scope="module")
def daskcluster_schema():
    pytest.importorskip("dask_kubernetes")
    jsonschema = pytest.importorskip("jsonschema")
    crd = importlib.resources.files("dask_kubernetes") / (
        "operator/deployment/helm/dask-kubernetes-operator/crds/daskcluster.yaml"
    )
    crd = yaml.safe_load(crd.read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    schema = version["schema"]["openAPIV3Schema"]
    schema["properties"].setdefault("apiVersion", {"type": "string"})
    schema["properties"].setdefault("kind", {"type": "string"})
    schema["properties"].setdefault("metadata", {"type": "object"})
    return crd, jsonschema.Draft7Validator(strict(schema))


def test_daskcluster_manifest_matches_the_operator_crd(daskcluster_schema):
    crd, validator = daskcluster_schema
    manifest = yaml.safe_load((DEPLOY / "kubernetes" / "daskcluster.yaml").read_text())
    assert manifest["apiVersion"] == f"{crd['spec']['group']}/v1"
    assert manifest["kind"] == crd["spec"]["names"]["kind"]
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
              for e in validator.iter_errors(manifest)]
    assert not errors, errors
    # The check has teeth: a misspelt field is refused.
    typo = copy.deepcopy(manifest)
    typo["spec"]["worker"]["replica"] = typo["spec"]["worker"].pop("replicas")
    assert not validator.is_valid(typo)


def test_daskcluster_workers_have_a_gpu_and_run_dask():
    manifest = yaml.safe_load((DEPLOY / "kubernetes" / "daskcluster.yaml").read_text())
    (worker,) = manifest["spec"]["worker"]["spec"]["containers"]
    (scheduler,) = manifest["spec"]["scheduler"]["spec"]["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {e["name"]: e["value"] for e in worker["env"]} == WORKER_ENV
    assert worker["args"][:3] == ["worker", "--name", "$(DASK_WORKER_NAME)"]
    assert worker["args"][worker["args"].index("--nthreads") + 1] == "1"
    # `dask worker` / `dask scheduler` are the console script that distributed installs.
    scripts = {e.name for e in importlib.metadata.entry_points(group="console_scripts")}
    assert worker["command"] == scheduler["command"] == ["dask"] and "dask" in scripts
    assert scheduler["args"][0] == "scheduler"
    # TLS only: scheduler and workers hold the certificates of one Secret.
    for container in (worker, scheduler):
        args = container["args"]
        assert args[args.index("--protocol") + 1] == "tls"
        assert {args[args.index(f"--tls-{n}") + 1] for n in ("ca-file", "cert", "key")} == {
            "/tls/ca.crt", "/tls/tls.crt", "/tls/tls.key"}
        assert {"name": "tls", "mountPath": "/tls", "readOnly": True} in container["volumeMounts"]
    assert "tls://cryoensemble-scheduler:8786" in worker["args"]
    for pod in (manifest["spec"]["worker"]["spec"], manifest["spec"]["scheduler"]["spec"]):
        assert {"name": "tls", "secret": {"secretName": "cryoensemble-tls"}} in pod["volumes"]


# --- Container recipes -----------------------------------------------------------------

def installed_extras(text: str) -> list[set[str]]:
    return [set(m.split(",")) for m in re.findall(r'pip install [^\n]*"/src\[([\w,]+)\]"', text)]


def test_container_recipes_install_the_gpu_extras_of_pyproject():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    apptainer = (DEPLOY / "cryoensemble.def").read_text()
    (docker_extras,) = installed_extras(dockerfile)
    (apptainer_extras,) = installed_extras(apptainer)
    assert docker_extras == apptainer_extras
    assert "gpu" in docker_extras and docker_extras <= set(PYPROJECT["project"]["optional-dependencies"])
    # The CUDA base matches the CUDA major of the JAX wheels the gpu extra installs.
    (jax_gpu,) = [d for d in PYPROJECT["project"]["optional-dependencies"]["gpu"] if d.startswith("jax[")]
    cuda_major = re.search(r"cuda(\d+)", jax_gpu).group(1)
    for base in (re.search(r"^FROM (\S+)", dockerfile, re.M).group(1),
                 re.search(r"^From: (\S+)", apptainer, re.M).group(1)):
        assert base.startswith(f"nvidia/cuda:{cuda_major}."), base
    for name, value in WORKER_ENV.items():
        assert re.search(rf"\b{name}={value}\b", dockerfile)
        assert f"export {name}={value}" in apptainer
    # What the recipes copy into the image is what a pip install of the project needs.
    for path in ("pyproject.toml", "README.md", "LICENSE", "cryoensemble"):
        assert (ROOT / path).exists()
        assert path in dockerfile and path in apptainer
