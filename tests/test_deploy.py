"""The deployment files agree with the code, with the Makefile and with each other.

Two real tools check what they can: `make image-test` builds the Dockerfile
with buildah and runs the image (COPY paths, the pip steps, the user, the
HEALTHCHECK, the model), and here kubernetes-validate checks the manifests
in deploy/ against the official schemas of KUBERNETES_VERSIONS. What neither
can see stays here: values that must equal the code's or the Makefile's
(the command, the port, the probes' path, the malloc settings) and the
manifests' references to each other; and that what stands in front
(deploy/nginx/isnet-wsgi.conf, deploy/ingress/ingress.yaml) keeps the service's limits.
"""

from __future__ import annotations

import copy
import json
import os
import re
import runpy
import shlex
import tomllib
from pathlib import Path
from unittest import mock

import kubernetes_validate
import pytest
import yaml
from gunicorn.util import load_class
from gunicorn.workers.sync import SyncWorker

from isnet_wsgi.config import Settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
NGINX_CONFIG = DEPLOY / "nginx" / "isnet-wsgi.conf"
# Applied on its own after deploy/ (deploy/ingress/ingress.yaml says why).
INGRESS = DEPLOY / "ingress" / "ingress.yaml"
HEALTH_PATH = "/api/bg/health"
# The oldest Kubernetes the manifests are meant for, and the newest whose
# schemas the pinned kubernetes-validate ships (it needs no network).
KUBERNETES_VERSIONS = ("1.31", "1.37")
# The malloc variables come from malloc.env: tests/test_bench_harness.py checks them.
MAKEFILE_ENV = ("ORT_DISABLE_TELEMETRY",)


# --- Reading the files ---------------------------------------------------------


def dockerfile_lines() -> list[str]:
    return [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def dockerfile_instruction(keyword: str) -> str:
    """The arguments of the Dockerfile's last one-line `keyword` instruction."""
    found = [line.split(None, 1)[1] for line in dockerfile_lines() if line.split()[0] == keyword]
    assert found, f"the Dockerfile has no {keyword}"
    return found[-1]


def dockerfile_env(name: str) -> str:
    """The value the Dockerfile's ENV gives `name` (last assignment wins)."""
    values = re.findall(rf"(?:^|\s){name}=(\S+)", "\n".join(dockerfile_lines()))
    assert values, f"the Dockerfile sets no {name}"
    return values[-1]


def makefile_exports() -> dict[str, str]:
    exports = {}
    for line in (ROOT / "Makefile").read_text().splitlines():
        match = re.match(r"export\s+(\w+)\s*[?:]?=\s*(\S*)", line)
        if match:
            exports[match[1]] = match[2]
    return exports


def makefile_recipe(target: str) -> list[str]:
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"{target}\s*:", line))
    recipe = []
    for line in lines[start + 1:]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    assert recipe, f"the Makefile's {target} target has no recipe"
    return recipe


def gunicorn_settings(environ: dict[str, str]) -> dict:
    """gunicorn.conf.py's module-level settings as gunicorn sees them under `environ`."""
    with mock.patch.dict(os.environ, environ):
        return runpy.run_path(str(ROOT / "gunicorn.conf.py"))


def kustomized_resources() -> list[dict]:
    """The objects `kubectl apply -k deploy/` applies: the kustomization's resources."""
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    return [document for name in kustomization["resources"]
            for document in yaml.safe_load_all((DEPLOY / name).read_text()) if document]


def nginx_directive(name: str) -> str:
    """The value of the one `name ...;` in deploy/nginx/isnet-wsgi.conf."""
    values = re.findall(rf"^\s*{name}\s+([^;]+);", NGINX_CONFIG.read_text(), re.MULTILINE)
    assert len(values) == 1, f"{NGINX_CONFIG.name}: {name} {values}"
    return values[0]


def nginx_seconds(value: str) -> int:
    """nginx's `75s` or ingress-nginx's `75` as seconds."""
    return int(value.removesuffix("s"))


def size_mb(value: str) -> int:
    """nginx's size `17m` in MB (MiB, as MAX_UPLOAD_MB)."""
    assert value.endswith("m"), f"{value}: give sizes in m"
    return int(value[:-1])


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict]:
    by_kind = {}
    for resource in kustomized_resources():
        assert resource["kind"] not in by_kind, f"two {resource['kind']} objects"
        by_kind[resource["kind"]] = resource
    return by_kind


@pytest.fixture(scope="module")
def pod(manifests) -> dict:
    return manifests["Deployment"]["spec"]["template"]["spec"]


@pytest.fixture(scope="module")
def container(pod) -> dict:
    (only,) = pod["containers"]
    return only


@pytest.fixture(scope="module")
def container_env(container) -> dict[str, str]:
    """The literal values; a value from a Secret is not known here."""
    return {item["name"]: item["value"] for item in container["env"] if "value" in item}


@pytest.fixture(scope="module")
def ingress() -> dict:
    return yaml.safe_load(INGRESS.read_text())


# --- Kubernetes: the official schemas ------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_validate_against_the_kubernetes_schemas(version):
    """Strict schemas: a misspelt or misplaced field fails, not only a wrong type."""
    resources = kustomized_resources()
    assert {r["kind"] for r in resources} == {"Deployment", "Service", "HorizontalPodAutoscaler"}
    for resource in resources:
        assert kubernetes_validate.validate(resource, version, strict=True) == version


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_ingress_validates_against_the_kubernetes_schemas(ingress, version):
    assert ingress["kind"] == "Ingress"
    assert kubernetes_validate.validate(ingress, version, strict=True) == version


def test_the_schema_check_rejects_a_misspelt_probe_field(manifests):
    broken = copy.deepcopy(manifests["Deployment"])
    probe = broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]
    probe["timeoutSecond"] = probe.pop("timeoutSeconds")
    with pytest.raises(kubernetes_validate.ValidationError, match="timeoutSecond"):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    others = {p.name for p in DEPLOY.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == others


# --- Dockerfile: what must equal the Makefile and the code -----------------------


def test_every_stage_builds_on_the_pinned_base_argument():
    default = re.fullmatch(r"BASE_IMAGE=(\S+)", dockerfile_instruction("ARG"))
    assert default and re.fullmatch(r"[\w./-]+:\d+\.\d+[\w.-]*", default[1]), "pin the base to a version tag"
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    first_from = next(i for i, line in enumerate(lines) if line.startswith("FROM "))
    assert any(line.startswith("ARG BASE_IMAGE=") for line in lines[:first_from]), "ARG must precede FROM"
    stages = [line.split() for line in lines if line.startswith("FROM ")]
    assert len(stages) >= 2 and all(words[1] == "${BASE_IMAGE}" for words in stages)


def test_cmd_runs_gunicorn_with_the_same_config_as_make_run():
    cmd = json.loads(dockerfile_instruction("CMD"))  # exec form: gunicorn is PID 1
    assert not [line for line in dockerfile_lines() if line.startswith("ENTRYPOINT")]
    (line,) = [line for line in makefile_recipe("run") if "gunicorn" in line]
    words = shlex.split(line)
    index = next(i for i, word in enumerate(words) if Path(word).name == "gunicorn")
    assert cmd == ["gunicorn", *words[index + 1:]], f"CMD {cmd} vs make run {words[index:]}"
    assert dockerfile_instruction("STOPSIGNAL") == "SIGTERM"


def test_image_environment_matches_the_makefile():
    exports = makefile_exports()
    for name in MAKEFILE_ENV:
        assert dockerfile_env(name) == exports[name], f"{name}: Dockerfile vs Makefile"
    assert dockerfile_env("PYTHONUNBUFFERED") == "1"


def test_image_port_is_the_default_and_exposed():
    default_port = str(Settings.from_env({}).port)
    assert dockerfile_env("PORT") == default_port
    assert dockerfile_instruction("EXPOSE").split("/")[0] == default_port


# --- railway.toml ---------------------------------------------------------------


def test_railway_builds_the_dockerfile_and_waits_for_health():
    config = tomllib.loads((ROOT / "railway.toml").read_text())
    assert config["build"]["builder"] == "DOCKERFILE"
    assert (ROOT / config["build"]["dockerfilePath"]).is_file()
    deploy = config["deploy"]
    assert deploy["healthcheckPath"] == HEALTH_PATH
    assert deploy["healthcheckTimeout"] >= 60, "start-up includes pulling and starting the image"
    assert deploy["restartPolicyType"] == "ON_FAILURE"
    assert "startCommand" not in deploy, "the Dockerfile's CMD is the one start command"
    assert deploy["drainingSeconds"] > Settings.from_env({}).request_timeout_s


# --- Kubernetes: what the schemas cannot see --------------------------------------


def test_container_runs_the_image_cmd_on_the_port_it_declares(container, container_env):
    assert "command" not in container and "args" not in container, "run the image's CMD"
    (port,) = container["ports"]
    assert port["containerPort"] == Settings.from_env(container_env).port
    assert gunicorn_settings(container_env)["bind"] == f"0.0.0.0:{port['containerPort']}"


def test_probes_hit_the_health_path_on_the_container_port(container):
    (port,) = container["ports"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == HEALTH_PATH, probe
        assert get["port"] in (port["name"], port["containerPort"]), probe


def test_liveness_outlasts_the_longest_request(container, container_env):
    """One sync worker answers the probe only after its current request."""
    live = container["livenessProbe"]
    assert live["periodSeconds"] * live["failureThreshold"] > Settings.from_env(container_env).request_timeout_s
    assert container["readinessProbe"]["timeoutSeconds"] >= 5


def test_memory_and_cpu_fit_one_worker(container, container_env):
    resources = container["resources"]
    assert resources["limits"]["memory"] == resources["requests"]["memory"] == "512Mi"
    settings = Settings.from_env(container_env)
    assert settings.memory_limit_mb < 512, "the service's budget should be under the container's"
    assert settings.intra_op_threads == float(resources["requests"]["cpu"]), "threads = CPUs requested"
    gunicorn = gunicorn_settings(container_env)
    assert gunicorn["workers"] == 1
    assert issubclass(load_class(gunicorn["worker_class"]), SyncWorker), "one request at a time"


def test_shutdown_grace_outlasts_a_request(pod, container, container_env):
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    graceful_timeout = gunicorn_settings(container_env)["graceful_timeout"]
    assert pod["terminationGracePeriodSeconds"] > int(pre_stop[1]) + graceful_timeout


def test_pod_runs_as_the_image_user_on_a_read_only_root(pod, container):
    uid, _, gid = dockerfile_instruction("USER").partition(":")
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (int(uid), int(gid or uid))
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]


def test_writable_paths_are_mounted_on_the_read_only_root(pod, container, container_env):
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    for path in ("/tmp", gunicorn_settings(container_env)["worker_tmp_dir"]):
        assert path in mounts, f"{path} is not writable with readOnlyRootFilesystem"
        assert "emptyDir" in volumes[mounts[path]]


def test_service_routes_to_the_pods_http_port(manifests, container):
    labels = manifests["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert manifests["Service"]["spec"]["selector"].items() <= labels.items()
    assert manifests["Deployment"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (port,) = manifests["Service"]["spec"]["ports"]
    assert port["targetPort"] in (container["ports"][0]["name"], container["ports"][0]["containerPort"])


def test_autoscaler_scales_the_deployment_on_cpu(manifests, container):
    hpa, deployment = manifests["HorizontalPodAutoscaler"], manifests["Deployment"]
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        deployment["apiVersion"], deployment["kind"], deployment["metadata"]["name"])
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and 0 < metric["resource"]["target"]["averageUtilization"] <= 100
    assert "cpu" in container["resources"]["requests"], "CPU utilisation is relative to the request"
    assert "replicas" not in deployment["spec"], "the autoscaler owns the replica count"


def test_the_api_key_comes_from_an_optional_secret(container):
    """Without the Secret the pod still starts (open endpoints); with it, the key is set."""
    (api_key,) = [item for item in container["env"] if item["name"] == "API_KEY"]
    reference = api_key["valueFrom"]["secretKeyRef"]
    assert reference["optional"] is True and reference["name"] and reference["key"]
    assert Settings.from_env({"API_KEY": "from-the-secret"}).api_key == "from-the-secret"
    assert Settings.from_env({}).api_key is None


# --- In front: deploy/nginx/ and the Ingress ----------------------------------------


def test_the_proxy_body_limit_follows_max_upload_mb():
    """The largest body the service takes is two files of MAX_UPLOAD_MB (a
    photo and a background) and a form around them: nginx allows that and no
    more than 1 MB over it."""
    max_upload_mb = Settings.from_env({}).max_upload_mb
    limit_mb = size_mb(nginx_directive("client_max_body_size"))
    assert 2 * max_upload_mb < limit_mb <= 2 * max_upload_mb + 1


def test_the_proxy_outwaits_a_request():
    """The service's own 503 for a request past its deadline reaches the
    client, not nginx's 504."""
    request_timeout_s = Settings.from_env({}).request_timeout_s
    for name in ("proxy_read_timeout", "proxy_send_timeout"):
        assert nginx_seconds(nginx_directive(name)) > request_timeout_s, name


def test_the_ingress_has_the_nginx_configs_settings(ingress):
    annotations = {key.removeprefix("nginx.ingress.kubernetes.io/"): value
                   for key, value in ingress["metadata"]["annotations"].items()}
    assert annotations["proxy-body-size"] == nginx_directive("client_max_body_size")
    assert annotations["client-body-buffer-size"] == nginx_directive("client_body_buffer_size")
    for name in ("proxy-request-buffering", "proxy-buffering"):
        assert annotations[name] == nginx_directive(name.replace("-", "_")) == "on", name
    for name in ("proxy-connect-timeout", "proxy-send-timeout", "proxy-read-timeout"):
        assert nginx_seconds(annotations[name]) == nginx_seconds(
            nginx_directive(name.replace("-", "_"))), name
    # ingress-nginx has no least_conn; EWMA is its least-busy choice.
    assert re.search(r"^\s*least_conn;", NGINX_CONFIG.read_text(), re.MULTILINE)
    assert annotations["load-balance"] == "ewma"


def test_the_ingress_routes_everything_to_the_service(ingress, manifests):
    (rule,) = ingress["spec"]["rules"]
    (path,) = rule["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/", "Prefix")
    backend = path["backend"]["service"]
    service = manifests["Service"]
    assert backend["name"] == service["metadata"]["name"]
    assert backend["port"]["name"] in [port["name"] for port in service["spec"]["ports"]]
