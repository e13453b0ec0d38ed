"""The deployment files in infra/, checked statically (no Docker, no Kubernetes, no network).

Each file is checked with the real validator where one runs offline: the Compose specification's
JSON Schema (as check-jsonschema ships it), Kubernetes' OpenAPI schemas (kubernetes-validate) for
the pod templates and the core objects (KubeRay's own CRD schemas are not vendored here: a cluster
checks them at `kubectl apply --dry-run=server`), Ray's own cluster-config schema and `ray up`'s bootstrap, `ray start`'s and
`curate build`'s own argument parsers, and Prefect's own work-pool validation. The rest is checked
across files: the image the manifests run is the one the Dockerfile builds, the versions they
name are the locked ones, the recipes they build exist and validate.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import importlib.resources
import ipaddress
import json
import os
import re
import shlex
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path
from urllib.parse import urlparse

import jsonschema
import pytest
import yaml

from curation.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
DOCKERFILE = INFRA / "docker" / "Dockerfile"
DOCKERIGNORE = INFRA / "docker" / "Dockerfile.dockerignore"
COMPOSE = INFRA / "compose" / "compose.yaml"
KUBERAY = INFRA / "kuberay"
RAY_CLUSTER = INFRA / "ray" / "cluster.yaml"
WORK_POOL = INFRA / "prefect" / "work-pool.json"
IMAGE = "curation:latest"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# the files this module checks (infra/data/ and infra/prefect/prefect.yaml are tested elsewhere)
DEPLOYMENT_FILES = [DOCKERFILE, DOCKERIGNORE, COMPOSE, *sorted(KUBERAY.glob("*.yaml")), RAY_CLUSTER, WORK_POOL,
                    INFRA / "README.md"]


# ---------------------------------------------------------------------------------------------
# helpers


def lock_pins() -> dict[str, str]:
    """name -> version of every package requirements.lock pins."""
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-\[\]]+)==(\S+)", line)
        if m:
            pins[m.group(1).lower()] = m.group(2)
    return pins


def lock_python_version() -> str:
    """The --python-version requirements.lock was compiled for (its header names the command)."""
    m = re.search(r"--python-version (\d+\.\d+)", (ROOT / "requirements.lock").read_text())
    assert m, "requirements.lock's header does not name the Python version it was compiled for"
    return m.group(1)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order: continuation lines joined, comments dropped."""
    out, buf = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):  # comments may sit inside a continued instruction too
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        instr, _, args = buf.partition(" ")
        out.append((instr.upper(), args.strip()))
        buf = ""
    assert not buf, "the Dockerfile ends inside a continued line"
    return out


def dockerfile_args() -> dict[str, str]:
    """ARG defaults."""
    args = {}
    for instr, value in dockerfile_instructions():
        if instr == "ARG":
            name, _, default = value.partition("=")
            args[name] = default
    return args


def dockerfile_env() -> dict[str, str]:
    env = {}
    for instr, value in dockerfile_instructions():
        if instr == "ENV":
            for pair in shlex.split(value):
                name, _, v = pair.partition("=")
                env[name] = v
    return env


def dockerfile_runs() -> list[str]:
    """RUN commands with ${ARG} references replaced by the ARG defaults."""
    args = dockerfile_args()

    def expand(s: str) -> str:
        return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), s)

    return [expand(v) for i, v in dockerfile_instructions() if i == "RUN"]


def dockerfile_workdir() -> str:
    workdirs = [v for i, v in dockerfile_instructions() if i == "WORKDIR"]
    assert workdirs, "the Dockerfile sets no WORKDIR"
    return workdirs[-1]


def simple_commands(script: str) -> list[list[str]]:
    """The simple commands of a shell line (split on ;, &&, ||, |), each without leading
    VAR=value assignments or `exec`."""
    lex = shlex.shlex(script, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    commands, current = [], []
    for token in lex:
        if token in {";", "&&", "||", "|", "&"}:
            commands.append(current)
            current = []
        else:
            current.append(token)
    commands.append(current)
    out = []
    for words in commands:
        while words and (re.fullmatch(r"[A-Za-z_]\w*=.*", words[0]) or words[0] == "exec"):
            words = words[1:]
        if words:
            out.append(words)
    return out


def ray_start(args: list[str]) -> dict:
    """`ray start`'s own parser on these arguments (an unknown or mistyped option fails)."""
    from ray.scripts.scripts import start

    return start.make_context("ray start", list(args)).params


def ray_starts(script: str) -> list[dict]:
    return [ray_start(c[2:]) for c in simple_commands(script) if c[:2] == ["ray", "start"]]


def curate_build(script: str) -> dict:
    """The one `curate build ...` in a shell line, parsed by the curate CLI's own parser."""
    import typer

    from flows.cli import app

    builds = [c for c in simple_commands(script) if c[:2] == ["curate", "build"]]
    assert len(builds) == 1, f"expected one `curate build` in {script!r}"
    command = typer.main.get_command(app).commands["build"]
    return command.make_context("curate build", builds[0][2:]).params


def built_recipe(params: dict):
    """The recipe a parsed `curate build` builds, validated as the CLI validates it."""
    recipe = ROOT / params["recipe"]
    assert recipe.is_file(), f"{params['recipe']} does not exist"
    overrides = list(params["set_"] or []) + ([f"output.root={params['out']}"] if params["out"] else [])
    return load_recipe(str(recipe), overrides)


def load_all(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def kuberay_docs() -> dict[str, dict]:
    """kind -> document over infra/kuberay/*.yaml (one of each kind)."""
    docs = {}
    for path in sorted(KUBERAY.glob("*.yaml")):
        for d in load_all(path):
            assert d["kind"] not in docs, f"two {d['kind']} documents"
            docs[d["kind"]] = d
    return docs


def pod_templates(cluster_spec: dict) -> list[dict]:
    return [cluster_spec["headGroupSpec"]["template"]] + [g["template"] for g in cluster_spec["workerGroupSpecs"]]


def cpu(quantity: str | int) -> float:
    """A Kubernetes CPU quantity ("2", "500m") in cores."""
    q = str(quantity)
    return int(q[:-1]) / 1000 if q.endswith("m") else float(q)


# ---------------------------------------------------------------------------------------------
# Dockerfile


def test_dockerfile_base_image_is_a_pinned_slim_python_of_the_locked_version():
    froms = [v for i, v in dockerfile_instructions() if i == "FROM"]
    assert len(froms) == 1
    image, _, tag = froms[0].partition(":")
    assert image == "python" and tag != "latest"
    m = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)-slim(-\w+)?", tag)
    assert m, f"base image tag {tag!r} is not pinned to a patch release of a slim image"
    assert f"{m.group(1)}.{m.group(2)}" == lock_python_version() == "3.11"


def test_dockerfile_installs_the_lock_with_cpu_torch_then_the_project_without_deps():
    runs = dockerfile_runs()
    uv = [i for i, r in enumerate(runs) if re.search(r"\bpip install .*uv==", r)]
    lock = [i for i, r in enumerate(runs) if "uv pip install" in r and "-r requirements.lock" in r]
    project = [i for i, r in enumerate(runs) if "uv pip install" in r and re.search(r"--no-deps (-e )?\.(\s|$)", r)]
    assert uv and lock and project and uv[0] < lock[0] < project[0]
    lock_words = shlex.split(runs[lock[0]])
    assert lock_words[lock_words.index("--extra-index-url") + 1] == TORCH_CPU_INDEX
    # the uv the Makefile pins, and the torch pin only that CPU index serves
    make_uv = re.search(r"^UV_VER\s*:=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert f"uv=={make_uv}" in shlex.split(runs[uv[0]])
    assert lock_pins()["torch"].endswith("+cpu")
    assert TORCH_CPU_INDEX in (ROOT / "Makefile").read_text()  # the Makefile's fallback, the same index


def test_nothing_in_the_image_or_the_lock_is_for_gpus():
    assert not re.search(r"cuda|nvidia|cudnn|\bgpu\b", DOCKERFILE.read_text(), re.I)
    gpu_packages = [p for p in lock_pins() if re.match(r"nvidia-|cuda|triton$|cupy", p)]
    assert gpu_packages == []


def test_dockerfile_runs_as_a_non_root_user_offline_with_curate_as_entrypoint():
    instructions = dockerfile_instructions()
    users = [v for i, v in instructions if i == "USER"]
    assert users, "no USER: the image would run as root"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    entrypoint = [v for i, v in instructions if i == "ENTRYPOINT"][-1]
    assert json.loads(entrypoint) == ["curate"]  # exec form: signals reach curate
    assert entry_points(group="console_scripts", name="curate")  # the project's console script
    env = dockerfile_env()
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["CURATION_MODEL_CACHE"].startswith("/")


def dockerignore_patterns() -> list[str]:
    lines = [ln.strip() for ln in DOCKERIGNORE.read_text().splitlines()]
    return [ln for ln in lines if ln and not ln.startswith("#")]


def _pattern_regex(pattern: str) -> re.Pattern:
    out, i = "", 0
    pattern = pattern.strip("/")
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path (or a directory above it) decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        rx = _pattern_regex(pattern[1:] if negate else pattern)
        if any(rx.fullmatch(p) for p in prefixes):
            result = not negate
    return result


def test_dockerignore_matching_follows_dockers_last_match_rule():
    patterns = ["*", "!curation", "!infra/data", "**/__pycache__"]
    assert ignored(".venv/bin/python", patterns) and ignored("infra/docker/Dockerfile", patterns)
    assert not ignored("curation/recipe.py", patterns) and not ignored("infra/data/fetch_evals.py", patterns)
    assert ignored("curation/__pycache__/recipe.cpython-311.pyc", patterns)


def test_every_copy_source_exists_and_is_sent_in_the_build_context():
    patterns = dockerignore_patterns()
    copies = [v for i, v in dockerfile_instructions() if i in {"COPY", "ADD"}]
    assert copies
    for value in copies:
        words = shlex.split(value)
        assert not any(w.startswith("--from") for w in words), "a COPY from another image or stage"
        sources = [w for w in words[:-1] if not w.startswith("--")]
        for src in sources:
            path = ROOT / src
            assert path.exists(), f"COPY {src}: not in the repository"
            files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()
                                                   and "__pycache__" not in p.parts and ".egg-info" not in str(p)]
            assert files, f"COPY {src}: nothing to copy"
            for f in files:
                rel = f.relative_to(ROOT).as_posix()
                assert not ignored(rel, patterns), f"COPY {src}: {rel} is excluded by {DOCKERIGNORE.name}"
    # and what must never reach a build context is left out
    for rel in (".venv/bin/python", ".git/config", "data/evals_prompts.parquet", "out/x/LATEST", ".env"):
        assert ignored(rel, patterns), f"{rel} would be sent to the Docker daemon"


def test_the_image_bakes_the_quickstarts_data_and_model():
    quickstart = load_recipe(str(ROOT / "examples/quickstart.yaml"))
    runs = dockerfile_runs()
    fetch = [r for r in runs if "infra/data/fetch_evals.py" in r]
    assert len(fetch) == 1
    words = shlex.split(fetch[0])
    assert words[words.index("--out") + 1] == quickstart.sources[0].path  # where the recipe reads it
    distil = [r for r in runs if "make_text_embedder" in r]
    assert len(distil) == 1
    assert re.search(r"make_text_embedder\('([^']+)'\)", distil[0]).group(1) == quickstart.embed.model


# ---------------------------------------------------------------------------------------------
# docker compose


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_file_validates_against_the_compose_specification_schema():
    schema_file = importlib.resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    assert [e.message for e in validator.iter_errors(compose())] == []
    bad = compose()
    bad["services"]["ray-head"]["shmsize"] = "2gb"  # the validator does reject a misspelt key
    assert list(validator.iter_errors(bad))


def test_compose_services_their_dependencies_healthchecks_and_volumes():
    doc = compose()
    services = doc["services"]
    assert set(services) == {"prefect", "ray-head", "ray-worker", "build"}
    for name, svc in services.items():
        for target, dep in (svc.get("depends_on") or {}).items():
            assert target in services, f"{name} depends on unknown service {target}"
            if dep["condition"] == "service_healthy":
                assert "test" in services[target].get("healthcheck", {}), f"{target} has no healthcheck"
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            assert source in (doc.get("volumes") or {}), f"{name}: volume {source} is not declared"
    assert services["build"]["depends_on"]["prefect"]["condition"] == "service_healthy"
    assert services["build"]["depends_on"]["ray-head"]["condition"] == "service_healthy"
    assert services["build"].get("restart") == "no"  # a one-shot job


def test_compose_builds_the_project_image_from_the_repository_root():
    services = compose()["services"]
    for name in ("ray-head", "ray-worker", "build"):
        svc = services[name]
        assert svc["image"] == IMAGE
        context = (COMPOSE.parent / svc["build"]["context"]).resolve()
        assert context == ROOT
        assert (context / svc["build"]["dockerfile"]).resolve() == DOCKERFILE


def test_compose_prefect_server_is_the_locked_prefect_version():
    prefect = compose()["services"]["prefect"]
    image, _, tag = prefect["image"].partition(":")
    assert image == "prefecthq/prefect"
    assert tag.split("-")[0] == lock_pins()["prefect"] == "3.8.8"
    assert tag.endswith(f"-python{lock_python_version()}")
    command = prefect["command"]
    assert command[:3] == ["prefect", "server", "start"]
    assert command[command.index("--host") + 1] == "0.0.0.0"
    port = command[command.index("--port") + 1]
    assert f"{port}:{port}" in prefect["ports"]


def test_compose_ray_nodes_parse_with_ray_start_and_the_build_joins_the_head():
    services = compose()["services"]
    head = ray_start(services["ray-head"]["entrypoint"][2:])
    worker = ray_start(services["ray-worker"]["entrypoint"][2:])
    assert services["ray-head"]["entrypoint"][:2] == services["ray-worker"]["entrypoint"][:2] == ["ray", "start"]
    assert head["head"] and head["block"] and head["dashboard_host"] == "0.0.0.0"
    head_address = f"ray-head:{head['port']}"
    assert worker["address"] == head_address and worker["block"] and not worker["head"]
    build = services["build"]
    assert build["environment"]["RAY_ADDRESS"] == head_address
    script = build["command"][0] if isinstance(build["command"], list) else build["command"]
    assert build["entrypoint"] == ["bash", "-c"]
    # the driver needs a Ray node on its own host: the job joins as one with no CPUs, then builds
    (joined,) = ray_starts(script)
    assert joined["address"] == head_address and joined["num_cpus"] == 0
    heads = [c[:2] for c in simple_commands(script)]
    assert heads.index(["ray", "start"]) < heads.index(["curate", "build"]) < heads.index(["ray", "stop"])
    # each embedding actor fits on one node
    threads = built_recipe(curate_build(script)).embed.threads_per_actor
    assert threads and threads <= min(head["num_cpus"], worker["num_cpus"])


def test_compose_build_job_builds_a_valid_recipe_into_mounted_volumes():
    services = compose()["services"]
    build = services["build"]
    script = build["command"][0] if isinstance(build["command"], list) else build["command"]
    recipe = built_recipe(curate_build(script))
    workdir = dockerfile_workdir()
    mounts = {v.split(":")[1] for v in build["volumes"]}
    assert f"{workdir}/{recipe.output.root}" in mounts, "the published versions would die with the container"
    for source in recipe.sources:
        assert any(f"{workdir}/{source.path}".startswith(m + "/") for m in mounts)
    api = urlparse(build["environment"]["PREFECT_API_URL"])
    assert api.hostname == "prefect" and api.path == "/api"
    prefect_command = services["prefect"]["command"]
    assert str(api.port) == prefect_command[prefect_command.index("--port") + 1]


def prefect_setting_names() -> set[str]:
    from prefect.settings import Settings
    from prefect.settings.legacy import _get_settings_fields

    return set(_get_settings_fields(Settings))


def test_every_prefect_variable_the_deployment_files_set_is_a_prefect_setting():
    names = set()
    for svc in compose()["services"].values():
        names |= {n for n in svc.get("environment", {}) if n.startswith("PREFECT_")}
    names |= {n for n in kuberay_docs()["ConfigMap"]["data"] if n.startswith("PREFECT_")}
    names |= {n for n in dockerfile_env() if n.startswith("PREFECT_")}
    assert {"PREFECT_API_URL", "PREFECT_SERVER_UI_API_URL"} <= names
    assert names - prefect_setting_names() == set()


# ---------------------------------------------------------------------------------------------
# KubeRay


def test_kuberay_pod_templates_and_core_objects_validate_against_the_kubernetes_schema():
    import kubernetes_validate

    version = kubernetes_validate.latest_version()
    docs = kuberay_docs()
    templates = pod_templates(docs["RayCluster"]["spec"]) + pod_templates(docs["RayJob"]["spec"]["rayClusterSpec"])
    for template in templates:  # strict: an unknown field (a typo) fails, as kubectl's strict validation does
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"},
                                      "template": template}, version, strict=True)
    for kind in ("ConfigMap", "PersistentVolumeClaim"):
        kubernetes_validate.validate(docs[kind], version, strict=True)
    bad = copy.deepcopy(templates[0])
    bad["spec"]["containers"][0]["resources"]["limit"] = bad["spec"]["containers"][0]["resources"].pop("limits")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"},
                                      "template": bad}, version, strict=True)


def test_kuberay_manifests_have_what_the_ray_io_v1_crds_require():
    """The CRDs' requirements (KubeRay v1.7.0) that hold without the schema at hand."""
    docs = kuberay_docs()
    cluster, job = docs["RayCluster"], docs["RayJob"]
    assert cluster["apiVersion"] == job["apiVersion"] == "ray.io/v1"
    assert isinstance(job["spec"]["entrypoint"], str) and job["spec"]["shutdownAfterJobFinishes"] is True
    for spec in (cluster["spec"], job["spec"]["rayClusterSpec"]):
        assert "template" in spec["headGroupSpec"]
        groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
        for group in spec["workerGroupSpecs"]:
            assert {"groupName", "minReplicas", "maxReplicas", "template"} <= set(group)
            assert group["minReplicas"] <= group.get("replicas", group["minReplicas"]) <= group["maxReplicas"]
        for group in groups:
            params = group.get("rayStartParams", {})
            assert all(isinstance(v, str) for v in params.values()), "rayStartParams values are strings"
            ray_start([f"--{k}={v}" for k, v in params.items()])  # KubeRay passes them to `ray start`
    # one cluster shape: the RayJob's cluster is the RayCluster's
    assert job["spec"]["rayClusterSpec"] == cluster["spec"]


@functools.cache
def test_kuberay_runs_the_project_image_cpu_only_at_the_locked_ray_version():
    docs = kuberay_docs()
    spec = docs["RayCluster"]["spec"]
    assert spec["rayVersion"] == lock_pins()["ray"]  # KubeRay picks probes and flags by this version
    threads = built_recipe(curate_build(shlex.split(docs["RayJob"]["spec"]["entrypoint"])[2])).embed.threads_per_actor
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"  # the driver's node: no actors there
    for template in pod_templates(spec):
        pod = template["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
        for c in pod["containers"]:
            assert c["image"] == IMAGE and c["imagePullPolicy"] == "IfNotPresent"
            requests, limits = c["resources"]["requests"], c["resources"]["limits"]
            assert set(requests) | set(limits) <= {"cpu", "memory"}, "CPU and memory only: no GPUs"
            assert cpu(requests["cpu"]) <= cpu(limits["cpu"])
    for group in spec["workerGroupSpecs"]:  # KubeRay gives a worker its CPU limit as Ray CPUs
        (worker,) = group["template"]["spec"]["containers"]
        assert threads <= cpu(worker["resources"]["limits"]["cpu"]), "an embedding actor would fit on no worker"
    everything = "\n".join(p.read_text() for p in KUBERAY.glob("*.yaml"))
    assert not re.search(r"nvidia|cuda|gpu", everything, re.I)


def test_rayjob_entrypoint_builds_a_valid_recipe_from_the_image_working_directory():
    docs = kuberay_docs()
    words = shlex.split(docs["RayJob"]["spec"]["entrypoint"])
    # KubeRay pastes the entrypoint into a shell line: it must be one quoted command
    assert words[:2] == ["bash", "-c"] and len(words) == 3
    commands = simple_commands(words[2])
    assert commands[0] == ["cd", dockerfile_workdir()]
    recipe = built_recipe(curate_build(words[2]))
    (head,) = docs["RayCluster"]["spec"]["headGroupSpec"]["template"]["spec"]["containers"]
    mounts = {m["mountPath"]: m["name"] for m in head["volumeMounts"]}
    out = mounts.get(f"{dockerfile_workdir()}/{recipe.output.root}")
    assert out, "the head does not mount the recipe's output root: versions would die with the pod"
    volumes = {v["name"]: v for v in docs["RayCluster"]["spec"]["headGroupSpec"]["template"]["spec"]["volumes"]}
    assert volumes[out]["persistentVolumeClaim"]["claimName"] == docs["PersistentVolumeClaim"]["metadata"]["name"]


def test_kuberay_pods_read_the_config_map_with_the_prefect_api_url():
    docs = kuberay_docs()
    config = docs["ConfigMap"]
    for template in pod_templates(docs["RayCluster"]["spec"]):
        for c in template["spec"]["containers"]:
            refs = [e["configMapRef"]["name"] for e in c.get("envFrom", []) if "configMapRef" in e]
            assert refs == [config["metadata"]["name"]]
    api = urlparse(config["data"]["PREFECT_API_URL"])
    assert api.scheme == "http" and api.hostname and api.port == 4200 and api.path == "/api"
    assert all(isinstance(v, str) for v in config["data"].values())  # ConfigMap data is strings only
    assert "RAY_ADDRESS" not in config["data"]  # KubeRay sets it per container (head: its own GCS)


# ---------------------------------------------------------------------------------------------
# ray up


def ray_cluster() -> dict:
    return yaml.safe_load(RAY_CLUSTER.read_text())


def test_ray_cluster_config_validates_with_rays_schema_and_ray_ups_bootstrap():
    import ray
    from ray.autoscaler._private.commands import _bootstrap_config

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = ray_cluster()
    jsonschema.validate(config, schema)
    # what `ray up` does first: fill in the local provider's defaults, validate, bootstrap
    bootstrapped = _bootstrap_config(copy.deepcopy(config), no_config_cache=True)
    assert bootstrapped["provider"]["type"] == "local"
    assert bootstrapped["head_setup_commands"][: len(config["setup_commands"])] == config["setup_commands"]
    bad = {**config, "min_workers": 2}  # a legacy key the schema rejects
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_ray_cluster_addresses_are_documentation_placeholders():
    provider = ray_cluster()["provider"]
    test_net = ipaddress.ip_network("192.0.2.0/24")  # RFC 5737
    for address in [provider["head_ip"], *provider["worker_ips"]]:
        assert ipaddress.ip_address(address) in test_net


def test_ray_cluster_syncs_existing_sources_and_installs_as_the_makefile_does():
    config = ray_cluster()
    for remote, local in config["file_mounts"].items():
        assert remote.startswith("~/curation/")
        assert (ROOT / local).exists(), f"file_mounts: {local} does not exist"
        assert remote.removeprefix("~/curation/") == Path(local).as_posix().removeprefix("./")
    makefile = (ROOT / "Makefile").read_text()
    setup = [c for c in config["setup_commands"] if "make setup" in c]
    assert len(setup) == 1
    # `make setup` is the install: the lock, CPU torch (find-links or PyTorch's CPU index), the project
    recipe = re.search(r"^\$\(VENV\)/\.installed:.*?\n((?:\t.*\n)+)", makefile, re.M).group(1)
    assert "-r requirements.lock" in recipe and "$(TORCH_SRC)" in recipe and "--no-deps -e ." in recipe
    assert re.search(r"^TORCH_SRC\s*:=.*--extra-index-url " + re.escape(TORCH_CPU_INDEX), makefile, re.M)
    python = re.search(r"PY=(python[\d.]+)", setup[0]).group(1)
    assert python == f"python{lock_python_version()}"
    # the head fetches the quickstart's data with a Makefile target that exists
    quickstart = load_recipe(str(ROOT / "examples/quickstart.yaml"))
    fetch = [c for c in config["head_setup_commands"] if "make " in c]
    target = simple_commands(fetch[0])[-1][-1]
    assert target == quickstart.sources[0].path and re.search(rf"^{re.escape(target)}:", makefile, re.M)


def test_ray_cluster_start_commands_parse_with_ray_start():
    config = ray_cluster()
    (head,) = ray_starts(" ; ".join(config["head_start_ray_commands"]))
    (worker,) = ray_starts(" ; ".join(config["worker_start_ray_commands"]))
    assert head["head"] and head["autoscaling_config"] == "~/ray_bootstrap_config.yaml"
    assert worker["address"] == f"$RAY_HEAD_IP:{head['port']}"
    assert config["cluster_synced_files"] == ["~/.cache/curation/static-minilm"]  # the model the head distilled


# ---------------------------------------------------------------------------------------------
# Prefect work pool


def test_work_pool_template_has_the_keys_of_prefects_process_default():
    prefect = str(Path(sys.executable).with_name("prefect"))
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    done = subprocess.run([prefect, "work-pool", "get-default-base-job-template", "--type", "process"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    default = json.loads(done.stdout)
    ours = json.loads(WORK_POOL.read_text())
    assert set(ours) == set(default) == {"job_configuration", "variables"}
    assert ours["job_configuration"] == default["job_configuration"]
    assert set(ours["variables"]["properties"]) == set(default["variables"]["properties"])
    for name, prop in default["variables"]["properties"].items():  # only defaults and descriptions differ
        mine = ours["variables"]["properties"][name]
        assert {k: v for k, v in mine.items() if k not in {"default", "description"}} == \
            {k: v for k, v in prop.items() if k not in {"default", "description"}}


class NoServer:
    """A Prefect client that fails when used: rendering the template needs no server."""

    def __getattr__(self, name):
        raise AssertionError(f"the template asked the Prefect server for {name}")


def test_work_pool_template_passes_prefects_validation_and_renders_a_process_job():
    from prefect.server.schemas.actions import WorkPoolCreate
    from prefect.workers.process import ProcessJobConfiguration

    template = json.loads(WORK_POOL.read_text())
    WorkPoolCreate(name="curation", type="process", base_job_template=template)  # the server's own check
    job = asyncio.run(ProcessJobConfiguration.from_template_and_values(template, {}, client=NoServer()))
    assert job.env["HF_HUB_OFFLINE"] == "1"
    assert str(job.working_dir) == dockerfile_workdir()  # the checkout inside the image
    assert (ROOT / "flows/curate.py").is_file()  # what deployments' entrypoint names, relative to it
    job = asyncio.run(ProcessJobConfiguration.from_template_and_values(
        template, {"working_dir": "/srv/curation", "env": {"RAY_ADDRESS": "ray-head:6379"}}, client=NoServer()))
    assert str(job.working_dir) == "/srv/curation" and job.env["RAY_ADDRESS"] == "ray-head:6379"
    assert job.env["HF_HUB_OFFLINE"] == "1"  # a deployment's env adds to the pool's


# ---------------------------------------------------------------------------------------------
# all of them


SECRET_KEY = re.compile(r"pass(word|wd)?$|secret|token|api[_-]?key|credential|private[_-]?key", re.I)


def literal_secrets(obj, path: str = "$") -> list[str]:
    """Keys named like secrets that hold a literal (not a ${VAR} placeholder, not a file path)."""
    found = []
    if isinstance(obj, dict):
        if isinstance(obj.get("name"), str) and "value" in obj:  # Kubernetes env: [{name, value}]
            obj = {**obj, obj["name"]: obj["value"]}
        for key, value in obj.items():
            if isinstance(key, str) and SECRET_KEY.search(key) and isinstance(value, str) and value \
                    and not value.startswith(("${", "~/", "/")):
                found.append(f"{path}.{key}")
            found += literal_secrets(value, f"{path}.{key}")
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            found += literal_secrets(value, f"{path}[{i}]")
    return found


def test_no_secrets_in_the_deployment_files():
    for path in DEPLOYMENT_FILES:
        text = path.read_text()
        assert not re.search(r"-----BEGIN [A-Z ]*PRIVATE KEY-----|AKIA[0-9A-Z]{16}|\bgh[pousr]_\w{20,}", text), path
        assert not re.search(r"(?i)(password|passwd|secret)\s*[=:]\s*['\"]?[^\s'\"$<{]", text), path
        if path.suffix in {".yaml", ".json"}:
            docs = load_all(path) if path.suffix == ".yaml" else [json.loads(text)]
            assert [s for d in docs for s in literal_secrets(d)] == [], path
            assert all(d.get("kind") != "Secret" for d in docs if isinstance(d, dict))
    assert literal_secrets({"env": [{"name": "DB_PASSWORD", "value": "hunter2"}]})  # the check does find one


def test_every_recipe_the_deployment_files_and_the_readme_name_exists_and_validates():
    named = set()
    for path in [*DEPLOYMENT_FILES, ROOT / "README.md"]:
        named |= set(re.findall(r"examples/[\w/.-]+\.yaml", path.read_text()))
    assert "examples/quickstart.yaml" in named
    for recipe in sorted(named):
        assert (ROOT / recipe).is_file(), f"{recipe} does not exist"
        load_recipe(str(ROOT / recipe))


def readme_cluster_section() -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(r"^## Run on a cluster\n(.*?)(?=^## )", text, re.M | re.S)
    assert m, "README.md has no '## Run on a cluster' section"
    return m.group(1)


def test_readme_cluster_section_shows_each_deployment_file_and_every_path_it_names_exists():
    section = readme_cluster_section()
    for path in (DOCKERFILE, COMPOSE, KUBERAY / "raycluster.yaml", KUBERAY / "rayjob.yaml", KUBERAY / "config.yaml",
                 RAY_CLUSTER, WORK_POOL):
        assert path.relative_to(ROOT).as_posix() in section, f"the README does not show {path.name}"
    for rel in set(re.findall(r"\binfra/[\w/.-]+\.\w+", section)):
        assert (ROOT / rel).is_file(), f"README names {rel}, which does not exist"
    assert "RAY_ADDRESS" in section and "PREFECT_API_URL" in section
    infra_readme = (INFRA / "README.md").read_text()
    for path in DEPLOYMENT_FILES[:-1]:
        assert path.relative_to(INFRA).as_posix() in infra_readme, f"infra/README.md does not list {path.name}"
