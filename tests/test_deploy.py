"""The deployment files agree with the code and with each other.

There is no docker engine or cluster where the tests run, so the Dockerfile,
railway.toml and the Kubernetes manifests in deploy/ are checked by parsing
them: what a broken build or rollout would trip over (a COPY of a missing or
ignored file, a probe on the wrong path or port, settings that drift from the
Makefile) fails here instead.
"""

from __future__ import annotations

import fnmatch
import http.server
import json
import os
import re
import runpy
import shlex
import subprocess
import sys
import threading
import tomllib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from unittest import mock

import pytest
import yaml

from isnet_wsgi.config import Settings

ROOT = Path(__file__).resolve().parent.parent
HEALTH_PATH = "/api/bg/health"
DEV_ONLY_PACKAGES = ("onnx", "pytest", "webtest", "hypothesis")


# --- Dockerfile parsing -------------------------------------------------------


@dataclass
class Instruction:
    keyword: str  # upper case: FROM, COPY, ...
    args: str  # the rest of the instruction, continuations joined


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert found, f"stage {self.name or self.image} has no {keyword}"
        return found[-1]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for instruction in self.all("ENV"):
            words = shlex.split(instruction.args)
            if "=" not in words[0]:  # legacy form: ENV NAME value with spaces
                values[words[0]] = " ".join(words[1:])
                continue
            for word in words:
                name, _, value = word.partition("=")
                values[name] = value
        return values

    def workdir(self) -> PurePosixPath:
        workdir = PurePosixPath("/")
        for instruction in self.all("WORKDIR"):
            workdir = workdir / instruction.args.strip()
        return workdir


@dataclass
class Copy:
    from_stage: str | None
    sources: list[str]
    dest: str


def logical_lines(text: str) -> list[str]:
    """Dockerfile lines with `\\` continuations joined and comments dropped.

    As docker does, a comment line inside a continuation is skipped and does
    not end the instruction.
    """
    lines, pending = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    assert not pending, "the Dockerfile ends inside a line continuation"
    return lines


def parse_dockerfile(path: Path) -> list[Stage]:
    stages: list[Stage] = []
    for line in logical_lines(path.read_text()):
        keyword, _, args = line.partition(" ")
        instruction = Instruction(keyword.upper(), args.strip())
        if instruction.keyword == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].lower() == "as" else None
            stages.append(Stage(image=words[0], name=name))
            continue
        assert stages, f"{keyword} before the first FROM"
        stages[-1].instructions.append(instruction)
    return stages


def parse_copy(instruction: Instruction) -> Copy:
    words = shlex.split(instruction.args)
    flags = {}
    while words[0].startswith("--"):
        name, _, value = words.pop(0)[2:].partition("=")
        flags[name] = value
    if words[0].startswith("["):  # JSON form
        words = json.loads(" ".join(words))
    return Copy(from_stage=flags.get("from"), sources=words[:-1], dest=words[-1])


def exec_form(instruction: Instruction) -> list[str]:
    """The JSON array of a CMD; the shell form fails (gunicorn would not be PID 1)."""
    assert instruction.args.startswith("["), f"{instruction.keyword} is not in exec form"
    return json.loads(instruction.args)


def is_ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps `path` (relative, posix) out of the context.

    Docker's rules for the patterns this repo uses: a match on the path or on
    any folder above it excludes it, `**/` matches any depth (none included),
    a leading `/` means the root, `!` re-includes, and the last match wins.
    """
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        alternatives = {pattern, pattern.removeprefix("**/")}
        if any(fnmatch.fnmatchcase(c, p) for c in candidates for p in alternatives):
            ignored = not negate
    return ignored


# --- Makefile parsing ---------------------------------------------------------


def makefile_recipe(target: str) -> list[str]:
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"{target}\s*:", line))
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    assert recipe, f"the Makefile's {target} target has no recipe"
    return recipe


def makefile_exports() -> dict[str, str]:
    exports = {}
    for line in (ROOT / "Makefile").read_text().splitlines():
        match = re.match(r"export\s+(\w+)\s*[?:]?=\s*(\S*)", line)
        if match:
            exports[match[1]] = match[2]
    return exports


# --- Fixtures -----------------------------------------------------------------


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(ROOT / "Dockerfile")


@pytest.fixture(scope="module")
def runtime(stages) -> Stage:
    return stages[-1]


@pytest.fixture(scope="module")
def build(stages) -> Stage:
    builds = [s for s in stages if any("models.build" in r.args for r in s.all("RUN"))]
    assert len(builds) == 1, "exactly one stage should run `python -m models.build`"
    return builds[0]


@pytest.fixture(scope="module")
def dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict]:
    """The Kubernetes objects in deploy/, by kind."""
    by_kind = {}
    for path in sorted((ROOT / "deploy").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            assert document["kind"] not in by_kind, f"two {document['kind']} objects"
            by_kind[document["kind"]] = document
    return by_kind


@pytest.fixture(scope="module")
def container(manifests) -> dict:
    (only,) = manifests["Deployment"]["spec"]["template"]["spec"]["containers"]
    return only


@pytest.fixture(scope="module")
def container_env(container) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container["env"]}


def gunicorn_settings(environ: dict[str, str]) -> dict:
    """gunicorn.conf.py's module-level settings as gunicorn sees them under `environ`."""
    with mock.patch.dict(os.environ, environ):
        return runpy.run_path(str(ROOT / "gunicorn.conf.py"))


def mebibytes(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi)", quantity)
    assert match, f"memory quantity {quantity!r} is not in Ki/Mi/Gi"
    return int(match[1]) * units[match[2]]


def cpus(quantity: str) -> float:
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


# --- Dockerfile: stages and the build context ------------------------------------


def test_base_images_are_pinned_by_version_tag(stages):
    for stage in stages:
        assert re.fullmatch(r"[\w./-]+:\d+\.\d+[\w.-]*(@sha256:[0-9a-f]{64})?", stage.image), (
            f"{stage.image} is not pinned to a version tag"
        )
    assert len(stages) >= 2, "the Dockerfile should be multi-stage (build, runtime)"


def test_every_copy_source_is_in_the_context_or_an_earlier_stage(stages, dockerignore):
    for index, stage in enumerate(stages):
        earlier = {s.name for s in stages[:index]}
        for copy in map(parse_copy, stage.all("COPY")):
            if copy.from_stage is not None:
                assert copy.from_stage in earlier, f"COPY --from={copy.from_stage}: no earlier stage"
                continue
            for source in copy.sources:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
                assert not is_ignored(source.rstrip("/"), dockerignore), f"COPY {source}: .dockerignore drops it"


def test_dockerignore_keeps_local_state_out_and_the_model_sources_in(dockerignore):
    for path in (".git/HEAD", ".venv/bin/python", "bench/.venv-x/bin/python", "tests/test_deploy.py",
                 "isnet_wsgi/__pycache__/app.cpython-311.pyc", ".pytest_cache/v", "models/isnet-general-tiny.onnx"):
        assert is_ignored(path, dockerignore), f"{path} would be sent to the docker build"
    for path in ("models/build.py", "models/isnet-general-tiny.json", "isnet_wsgi/app.py", "gunicorn.conf.py",
                 "requirements.txt", "requirements-dev.txt"):
        assert not is_ignored(path, dockerignore), f"{path} is needed by the build but ignored"


def test_the_build_stage_installs_the_build_dependencies_and_checks_the_model(build):
    runs = " ".join(r.args for r in build.all("RUN"))
    assert "requirements-dev.txt" in runs
    assert re.search(r"apt-get install .*\bnodejs\b.*\bnpm\b", runs), "models.build needs node and npm"
    assert "test -s models/isnet-general-tiny.onnx" in runs, "an empty model should fail the build"


# --- Dockerfile: the runtime stage --------------------------------------------


def test_runtime_stage_installs_no_development_dependency(runtime):
    installs = [
        shlex.split(command)
        for run in runtime.all("RUN")
        for command in re.split(r"&&|\|\||;", run.args)
        if "pip install" in command
    ]
    assert any("requirements.txt" in words for words in installs), "requirements.txt is not installed"
    for words in installs:
        assert "requirements-dev.txt" not in words
        names = {re.split(r"[=<>~!\[]", w)[0].lower() for w in words}
        assert not names & set(DEV_ONLY_PACKAGES), f"development packages installed: {words}"
    for copy in map(parse_copy, runtime.all("COPY")):
        for source in copy.sources:
            assert PurePosixPath(source).name not in ("requirements-dev.txt", "models"), source
            assert copy.from_stage is None or source.endswith((".onnx", ".json")), source
    runtime_requirements = (ROOT / "requirements.txt").read_text()
    assert "requirements-dev.txt" not in runtime_requirements
    for package in DEV_ONLY_PACKAGES:
        assert not re.search(rf"^{package}\s*[=<>~]", runtime_requirements, re.M | re.I), package


def test_runtime_image_holds_the_app_where_its_default_settings_look(runtime, build):
    """The model and manifest land where config.DEFAULT_MODEL_PATH points, relative
    to the package, and CMD's relative config path resolves in the WORKDIR."""
    installed: dict[PurePosixPath, Copy] = {}
    for copy in map(parse_copy, runtime.all("COPY")):
        dest = runtime.workdir() / copy.dest
        for source in copy.sources:
            name = PurePosixPath(source.rstrip("/")).name
            installed[dest / name if copy.dest.endswith("/") and not source.endswith("/") else dest] = copy

    package = next(p for p in installed if p.name == "isnet_wsgi")
    project_root = package.parent
    model_path = Path(Settings.from_env({}).model_path).relative_to(ROOT)
    for path in (model_path, model_path.with_suffix(".json")):
        copy = installed.get(project_root / path.as_posix())
        assert copy is not None, f"{path} is not at {project_root / path.as_posix()}"
        assert copy.from_stage == build.name, f"{path} should come from the stage that built it"
        assert all(PurePosixPath(s).parent == build.workdir() / "models" for s in copy.sources)
    assert runtime.workdir() / "gunicorn.conf.py" in installed


def test_runtime_runs_as_a_numeric_non_root_user(runtime):
    user = runtime.last("USER").args.split(":")
    assert user[0].isdigit() and int(user[0]) != 0, "USER should be a numeric non-root uid"
    assert len(user) == 1 or (user[1].isdigit() and int(user[1]) != 0), "the group should not be root"


def test_runtime_environment_matches_the_makefile(runtime):
    env = runtime.env()
    exports = makefile_exports()
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES",
                 "ORT_DISABLE_TELEMETRY"):
        assert env.get(name) == exports[name], f"{name}: image {env.get(name)} vs Makefile {exports[name]}"
    assert env["PYTHONUNBUFFERED"] == "1"


def test_runtime_port_is_the_default_and_exposed(runtime):
    default_port = Settings.from_env({}).port
    assert runtime.env()["PORT"] == str(default_port)
    assert runtime.last("EXPOSE").args.split("/")[0] == str(default_port)


def test_cmd_runs_gunicorn_with_the_same_config_as_make_run(runtime):
    cmd = exec_form(runtime.last("CMD"))
    assert not runtime.all("ENTRYPOINT"), "an ENTRYPOINT would wrap CMD and take PID 1"
    (line,) = [line for line in makefile_recipe("run") if "gunicorn" in line]
    words = shlex.split(line)
    index = next(i for i, w in enumerate(words) if PurePosixPath(w).name == "gunicorn")
    assert cmd[0] == "gunicorn"
    assert cmd[1:] == words[index + 1 :], f"CMD {cmd} vs make run {words[index:]}"
    assert runtime.last("STOPSIGNAL").args == "SIGTERM"


# --- Dockerfile: HEALTHCHECK, run for real against a loopback server ---------------


def healthcheck_command(runtime: Stage) -> list[str]:
    args = runtime.last("HEALTHCHECK").args
    options, _, command = args.partition("CMD ")
    assert "--timeout=" in options and "--start-period=" in options
    return exec_form(Instruction("HEALTHCHECK", command.strip()))


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):
        self.send_response(self.status if self.path == HEALTH_PATH else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def run_healthcheck(runtime: Stage, status: int) -> int:
    handler = type("Health", (_Health,), {"status": status})
    with http.server.HTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        command = healthcheck_command(runtime)
        assert command[0] == "python" and "curl" not in command and "wget" not in command
        env = {**os.environ, "PORT": str(server.server_address[1])}
        done = subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True, timeout=30)
        server.shutdown()
    return done.returncode


def test_healthcheck_passes_when_the_health_path_on_port_answers_200(runtime):
    assert HEALTH_PATH in " ".join(healthcheck_command(runtime))
    assert run_healthcheck(runtime, 200) == 0


def test_healthcheck_fails_when_the_service_is_unhealthy(runtime):
    assert run_healthcheck(runtime, 503) != 0


# --- railway.toml -------------------------------------------------------------


def test_railway_builds_the_dockerfile_and_waits_for_health():
    config = tomllib.loads((ROOT / "railway.toml").read_text())
    assert config["build"]["builder"] == "DOCKERFILE"
    assert (ROOT / config["build"]["dockerfilePath"]).is_file()
    deploy = config["deploy"]
    assert deploy["healthcheckPath"] == HEALTH_PATH
    assert deploy["healthcheckTimeout"] >= 60, "start-up includes pulling and starting the image"
    assert deploy["restartPolicyType"] == "ON_FAILURE"
    assert deploy["restartPolicyMaxRetries"] >= 1
    assert "startCommand" not in deploy, "the Dockerfile's CMD is the one start command"
    assert deploy["drainingSeconds"] > Settings.from_env({}).request_timeout_s


# --- Kubernetes manifests -----------------------------------------------------


def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((ROOT / "deploy" / "kustomization.yaml").read_text())
    others = {p.name for p in (ROOT / "deploy").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == others


def test_container_runs_the_image_cmd_on_the_port_it_declares(container, container_env):
    assert "command" not in container and "args" not in container, (
        "the Deployment should run the image's CMD, not a second copy of it"
    )
    (port,) = container["ports"]
    settings = Settings.from_env(container_env)
    assert port["containerPort"] == settings.port
    bind = gunicorn_settings(container_env)["bind"]
    assert bind == f"0.0.0.0:{port['containerPort']}"


def test_probes_hit_the_health_path_on_the_container_port(container):
    (port,) = container["ports"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == HEALTH_PATH, probe
        assert get["port"] in (port["name"], port["containerPort"]), probe


def test_liveness_outlasts_the_longest_request(container, container_env):
    """One sync worker answers the probe only after its current request."""
    live = container["livenessProbe"]
    timeout_s = Settings.from_env(container_env).request_timeout_s
    assert live["periodSeconds"] * live["failureThreshold"] > timeout_s
    assert container["readinessProbe"]["timeoutSeconds"] >= 5


def test_memory_and_cpu_fit_one_worker(container, container_env):
    resources = container["resources"]
    limit_mi = mebibytes(resources["limits"]["memory"])
    assert limit_mi == mebibytes(resources["requests"]["memory"]) == 512
    settings = Settings.from_env(container_env)
    assert settings.memory_limit_mb < limit_mi, "the service's budget should be under the container's"
    assert settings.intra_op_threads == cpus(resources["requests"]["cpu"]), (
        "onnxruntime's threads should match the CPUs the pod requests"
    )
    gunicorn = gunicorn_settings(container_env)
    assert gunicorn["workers"] == 1 and gunicorn["worker_class"] == "sync"


def test_shutdown_grace_outlasts_a_request(manifests, container, container_env):
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    gunicorn = gunicorn_settings(container_env)
    assert pod["terminationGracePeriodSeconds"] > int(pre_stop[1]) + gunicorn["graceful_timeout"]


def test_pod_runs_as_the_image_user_on_a_read_only_root(manifests, container, runtime):
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    uid, _, gid = runtime.last("USER").args.partition(":")
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == int(uid)
    assert pod["securityContext"]["runAsGroup"] == int(gid or uid)
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]


def test_writable_paths_are_mounted_on_the_read_only_root(manifests, container, container_env):
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    worker_tmp_dir = gunicorn_settings(container_env)["worker_tmp_dir"]
    for path in ("/tmp", worker_tmp_dir):
        assert path in mounts, f"{path} is not writable with readOnlyRootFilesystem"
        assert "emptyDir" in volumes[mounts[path]]


def test_service_routes_to_the_pods_http_port(manifests, container):
    service = manifests["Service"]["spec"]
    labels = manifests["Deployment"]["spec"]["template"]["metadata"]["labels"]
    selector = manifests["Deployment"]["spec"]["selector"]["matchLabels"]
    assert service["selector"].items() <= labels.items()
    assert selector.items() <= labels.items()
    (port,) = service["ports"]
    assert port["targetPort"] in (container["ports"][0]["name"], container["ports"][0]["containerPort"])


def test_autoscaler_scales_the_deployment_on_cpu(manifests, container):
    hpa = manifests["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    deployment = manifests["Deployment"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        deployment["apiVersion"], "Deployment", deployment["metadata"]["name"]
    )
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert 0 < metric["resource"]["target"]["averageUtilization"] <= 100
    assert "cpu" in container["resources"]["requests"], "CPU utilisation is relative to the request"
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert "replicas" not in deployment["spec"], "the autoscaler owns the replica count"
