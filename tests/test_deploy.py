"""deploy/: every YAML file parses, and the keys that matter hold (nothing here runs a
container or a cluster): probes on /ok, the autoscaler's target, the vLLM tool-calling
flags, API keys from a secret, and a tierflow.toml that tierflow itself loads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tierflow.settings import BackendKind, load_settings

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
YAML_FILES = sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))
VLLM_FLAGS = (
    "--tokenizer-mode",
    "--config-format",
    "--load-format",
    "--enable-auto-tool-choice",
    "--tool-call-parser",
)
ROUTER_MODEL = "mistralai/Ministral-3-8B-Instruct-2512"


def _docs(path: Path) -> list[Any]:
    with path.open(encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def _manifests() -> dict[tuple[str, str], dict[str, Any]]:
    found = {}
    for path in (DEPLOY / "k8s").glob("*.yaml"):
        for doc in _docs(path):
            found[(doc["kind"], doc["metadata"]["name"])] = doc
    return found


def test_the_deploy_folder_has_the_files_we_document() -> None:
    names = {p.relative_to(DEPLOY).as_posix() for p in YAML_FILES}
    assert {"compose.yaml", "jaeger/compose.yaml"} <= names
    assert {f"k8s/{n}.yaml" for n in ("api", "hpa", "configmap", "secret.example")} <= names


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: p.relative_to(DEPLOY).as_posix())
def test_every_yaml_file_parses(path: Path) -> None:
    docs = _docs(path)
    assert docs and all(isinstance(d, dict) for d in docs)


def test_compose_services_and_their_commands() -> None:
    (compose,) = _docs(DEPLOY / "compose.yaml")
    services = compose["services"]
    assert set(services) >= {"api", "worker", "postgres", "jaeger", "console", "vllm"}
    api = services["api"]
    assert api["command"][:3] == ["serve", "--host", "0.0.0.0"]
    assert api["ports"] == ["127.0.0.1:8123:8123"]
    assert "/ok" in " ".join(api["healthcheck"]["test"])
    # API keys: a compose secret read as @file, never a literal in the file
    assert api["environment"]["TIERFLOW_API_KEYS"] == "@/run/secrets/tierflow_api_keys"
    assert api["secrets"] == ["tierflow_api_keys"]
    assert compose["secrets"]["tierflow_api_keys"]["file"] == "secrets/api_keys.txt"
    assert api["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert (DEPLOY / api["build"]["dockerfile"].removeprefix("deploy/")).is_file()
    assert (DEPLOY / compose["configs"]["tierflow_toml"]["file"]).is_file()
    assert services["postgres"]["image"] == "postgres:15"
    assert services["jaeger"]["image"].startswith("jaegertracing/jaeger:2.")
    assert api["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318"
    # runs go to worker processes through the DBOS queue (no Redis)
    assert api["command"][-2:] == ["--worker-engine", "dbos"]
    assert services["worker"]["command"] == ["worker"] and "profiles" not in services["worker"]
    assert "redis" not in services
    # what is not built yet stays out of a plain `up`
    assert services["console"]["profiles"] == ["pending"]
    assert services["console"]["command"] == ["ui", "--server", "http://api:8123"]


def test_compose_gpu_profile_runs_vllm_with_the_tool_calling_flags() -> None:
    (compose,) = _docs(DEPLOY / "compose.yaml")
    vllm = compose["services"]["vllm"]
    assert vllm["profiles"] == ["gpu"]
    assert vllm["image"] == "vllm/vllm-openai:v0.34.0"
    args = vllm["command"]
    assert args[0] == ROUTER_MODEL
    for flag in VLLM_FLAGS:
        assert any(a.split("=")[0] == flag for a in args), flag
    assert "--tokenizer-mode=mistral" in args and "--tool-call-parser=mistral" in args
    gpu = vllm["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]


def test_vllm_page_pins_the_version_and_gives_the_flags() -> None:
    text = (DEPLOY / "vllm.md").read_text()
    assert 'pip install "vllm==0.34.0"' in text and "vllm/vllm-openai:v0.34.0" in text
    for flag in VLLM_FLAGS:
        assert flag in text
    assert f"tierflow doctor --probe vllm:{ROUTER_MODEL}" in text
    assert 'tool_calling = "native"' in text


def test_k8s_api_deployment_probes_and_service() -> None:
    m = _manifests()
    deployment, service = m[("Deployment", "tierflow-api")], m[("Service", "tierflow-api")]
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/ok", "port": "http"}, probe
    assert ports == {"http": 8123}
    assert container["args"][:3] == ["serve", "--host", "0.0.0.0"]
    assert container["resources"]["requests"]["cpu"]  # the HPA's utilisation needs it
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    # API keys: the Secret's file, mounted where TIERFLOW_API_KEYS points
    env = {e["name"]: e for e in container["env"]}
    keys_path = env["TIERFLOW_API_KEYS"]["value"].removeprefix("@")
    mounts = {v["name"]: v["mountPath"] for v in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert keys_path == f"{mounts['keys']}/api_keys.txt"
    assert volumes["keys"]["secret"]["secretName"] == "tierflow-secrets"
    assert env["TIERFLOW_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "tierflow-secrets"
    assert volumes["config"]["configMap"]["name"] == "tierflow-config"


def test_k8s_hpa_targets_the_api_deployment_on_cpu() -> None:
    m = _manifests()
    hpa = m[("HorizontalPodAutoscaler", "tierflow-api")]
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        "apps/v1",
        "Deployment",
        "tierflow-api",
    )
    assert ("Deployment", target["name"]) in m
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_k8s_workers_share_the_state_and_scale_on_cpu() -> None:
    m = _manifests()
    worker = m[("Deployment", "tierflow-worker")]
    pod = worker["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert container["args"] == ["worker"]
    env = {e["name"]: e for e in container["env"]}
    assert env["TIERFLOW_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "tierflow-secrets"
    # SIGTERM drains for [server] drain_s (default 30 s) before the pod is killed
    assert pod["spec"]["terminationGracePeriodSeconds"] > 30
    assert worker["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    hpa = m[("HorizontalPodAutoscaler", "tierflow-worker")]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "tierflow-worker"
    # the API hands its runs to the queue
    (api,) = m[("Deployment", "tierflow-api")]["spec"]["template"]["spec"]["containers"]
    assert api["args"][-2:] == ["--worker-engine", "dbos"]


def test_k8s_secret_example_has_the_keys_the_deployment_reads() -> None:
    m = _manifests()
    secret = m[("Secret", "tierflow-secrets")]["stringData"]
    (container,) = m[("Deployment", "tierflow-api")]["spec"]["template"]["spec"]["containers"]
    wanted = {e["valueFrom"]["secretKeyRef"]["key"] for e in container["env"] if "valueFrom" in e}
    assert wanted | {"api_keys.txt"} <= set(secret)
    keys = [line for line in secret["api_keys.txt"].splitlines() if line.strip()]
    assert len(keys) == 2


def test_the_deployed_config_is_one_text_that_tierflow_loads(tmp_path: Path) -> None:
    configmap = _manifests()[("ConfigMap", "tierflow-config")]
    text = (DEPLOY / "tierflow.toml").read_text()
    assert configmap["data"]["tierflow.toml"] == text
    path = tmp_path / "tierflow.toml"
    path.write_text(configmap["data"]["tierflow.toml"])
    settings = load_settings(path)
    router = settings.tiers["router"].backends
    assert [b.id for b in router] == [f"vllm:{ROUTER_MODEL}", "local"]
    assert router[0].kind is BackendKind.VLLM
    assert settings.backends.vllm.tool_calling == "native"
    assert settings.backends.vllm.base_url == "http://vllm:8000/v1"
