"""The production packaging is checked without Docker or a cluster: docker-compose.yml and
deploy/k8s give each service only settings it really reads, with values that parse, wired to
the right hosts; kafka-init creates exactly the registry's topics and their DLQs."""

from __future__ import annotations

import base64
import json
import os
import re
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings
from sqlalchemy.engine import make_url

from cem.config import CEMSettings
from crm.config import CRMSettings
from cxkit.events.registry import TOPICS, dlq_topic

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
K8S_DIR = ROOT / "deploy" / "k8s"
SETTINGS: dict[str, type[BaseSettings]] = {"CRM": CRMSettings, "CEM": CEMSettings}
APP_SERVICES = {"crm": "CRM", "cem": "CEM", "crm-migrate": "CRM", "cem-migrate": "CEM"}
PORTS = {"crm": 8001, "cem": 8002}

# `${NAME}`, `${NAME:-default}`, `${NAME-default}` and the `$$` escape, as compose reads them.
_COMPOSE_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def interpolate(value: Any) -> Any:
    """Compose interpolation with an empty environment (what `docker compose config` shows
    on a fresh clone without a .env file): every variable takes its default."""
    if isinstance(value, str):
        return _COMPOSE_VARIABLE.sub(lambda m: "$" if m.group(0) == "$$" else (m.group(2) or ""), value)
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    return value


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return interpolate(yaml.safe_load(COMPOSE_FILE.read_text()))


def environment_of(service: dict[str, Any]) -> dict[str, str]:
    """A compose service's environment, from either the mapping or the list form."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else (json.dumps(v) if isinstance(v, bool) else str(v)) for k, v in env.items()}


def settings_with(prefix: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """Instantiate the service's settings the way the service does: from the environment."""
    for key in list(os.environ):
        if key.upper().startswith(f"{prefix}_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return SETTINGS[prefix]()


def assert_only_real_settings(prefix: str, env: dict[str, str], where: str) -> None:
    fields = SETTINGS[prefix].model_fields
    other = next(p for p in SETTINGS if p != prefix)
    for key in env:
        assert not key.startswith(f"{other}_"), f"{where}: {key} belongs to the other service"
        if key.startswith(f"{prefix}_"):
            name = key[len(prefix) + 1 :].lower()
            assert name in fields, f"{where}: {key} is not a setting of {SETTINGS[prefix].__name__} (no field {name!r})"


def services_using_image(compose: dict[str, Any], image_prefix: str) -> list[str]:
    return [name for name, svc in compose["services"].items() if str(svc.get("image", "")).startswith(image_prefix)]


# --- docker-compose.yml -------------------------------------------------------------------


@pytest.mark.parametrize("service", sorted(APP_SERVICES))
def test_compose_environment_names_only_real_settings(compose: dict[str, Any], service: str) -> None:
    assert_only_real_settings(APP_SERVICES[service], environment_of(compose["services"][service]), service)


@pytest.mark.parametrize("service", sorted(APP_SERVICES))
def test_compose_environment_parses_and_points_at_the_compose_infrastructure(
    compose: dict[str, Any], service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = APP_SERVICES[service]
    env = environment_of(compose["services"][service])
    for required in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "KAFKA_ENABLE_IDEMPOTENCE"):
        assert f"{prefix}_{required}" in env, f"{service}: {prefix}_{required} is not given"
    settings = settings_with(prefix, env, monkeypatch)

    (postgres,) = services_using_image(compose, "postgres:")
    url = make_url(settings.database_url)
    assert url.drivername == "postgresql+asyncpg"
    assert url.host == postgres
    assert url.port in (None, 5432)
    # The role and database deploy/postgres/init-databases.sh creates, with the password given to it.
    assert url.database == url.username == prefix.lower()
    assert url.password == environment_of(compose["services"][postgres])[f"{prefix}_DB_PASSWORD"]

    assert settings.kafka_bootstrap_servers == internal_kafka_listener(compose)
    assert settings.kafka_enable_idempotence is True


def internal_kafka_listener(compose: dict[str, Any]) -> str:
    """host:port of the listener the broker advertises to containers on the compose network."""
    (kafka,) = [name for name in services_using_image(compose, "apache/kafka") if name != "kafka-init"]
    env = environment_of(compose["services"][kafka])
    name = env.get("KAFKA_INTER_BROKER_LISTENER_NAME", "PLAINTEXT")
    advertised = dict(entry.split("://", 1) for entry in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    bound = {entry.split("://", 1)[0]: entry.rpartition(":")[2] for entry in env["KAFKA_LISTENERS"].split(",")}
    host, _, port = advertised[name].rpartition(":")
    assert host in (kafka, compose["services"][kafka].get("hostname")), f"{name} listener {host} is not the kafka service"
    assert bound[name] == port, f"{name} is advertised on port {port} but listens on {bound[name]}"
    return advertised[name]


def test_compose_kafka_is_a_single_kraft_node_without_topic_auto_creation(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = environment_of(kafka)
    for key in (
        "KAFKA_NODE_ID",
        "KAFKA_PROCESS_ROLES",
        "KAFKA_LISTENERS",
        "KAFKA_ADVERTISED_LISTENERS",
        "KAFKA_CONTROLLER_LISTENER_NAMES",
        "KAFKA_CONTROLLER_QUORUM_VOTERS",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
        "CLUSTER_ID",
    ):
        assert env.get(key), f"kafka: {key} is not set"
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    controller_port = re.search(rf"{controller}://[^:,]*:(\d+)", env["KAFKA_LISTENERS"])
    assert controller_port, "the controller listener is not in KAFKA_LISTENERS"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:{controller_port.group(1)}"
    protocols = dict(pair.split(":") for pair in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    for listener in env["KAFKA_LISTENERS"].split(","):
        assert listener.split("://")[0] in protocols, f"{listener} has no security protocol"
    assert controller not in env["KAFKA_ADVERTISED_LISTENERS"]
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "1"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert "healthcheck" in kafka


def test_compose_postgres_runs_the_init_script_that_creates_both_databases(compose: dict[str, Any]) -> None:
    postgres = compose["services"]["postgres"]
    assert postgres["image"] == "postgres:15"
    assert "healthcheck" in postgres
    mounts = {v.split(":")[1]: v.split(":")[0] for v in postgres["volumes"]}
    init_dir = ROOT / mounts["/docker-entrypoint-initdb.d"]
    script = init_dir / "init-databases.sh"
    assert script.is_file()
    assert script.stat().st_mode & stat.S_IXUSR, "the postgres image sources non-executable scripts; keep it executable"
    text = script.read_text()
    assert "create_service_database crm" in text and "create_service_database cem" in text


@pytest.mark.parametrize("service", ["crm", "cem"])
def test_compose_service_waits_for_its_migration_and_the_topics(compose: dict[str, Any], service: str) -> None:
    services = compose["services"]
    depends = services[service]["depends_on"]
    for one_shot in (f"{service}-migrate", "kafka-init"):
        assert depends[one_shot]["condition"] == "service_completed_successfully", f"{service} does not wait for {one_shot}"
    migrate = services[f"{service}-migrate"]
    assert migrate["command"] == [service, "migrate"]
    assert migrate["image"] == services[service]["image"]
    assert migrate["build"] == services[service]["build"]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services[service]["ports"] == [f"{PORTS[service]}:{PORTS[service]}"]


def run_create_topics(env: dict[str, str], tmp_path: Path, configs: dict[str, list[str]] | None = None) -> dict[str, int]:
    """Run deploy/kafka/create-topics.sh with a stand-in kafka-topics.sh; returns the topics
    it asked to create and their partition counts (and fills `configs`: each topic's --config)."""
    calls = tmp_path / "calls"
    tool = tmp_path / "kafka-topics.sh"
    tool.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$*" >> {calls}\n')
    tool.chmod(0o755)
    script = ROOT / "deploy" / "kafka" / "create-topics.sh"
    subprocess.run(
        ["bash", str(script)],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env, "TOPICS_TOOL": str(tool)},
        check=True,
        capture_output=True,
    )
    created: dict[str, int] = {}
    for line in calls.read_text().splitlines():
        args = line.split()
        if "--create" in args:
            assert "--if-not-exists" in args, "topic creation must be re-runnable"
            topic = args[args.index("--topic") + 1]
            created[topic] = int(args[args.index("--partitions") + 1])
            if configs is not None:
                configs[topic] = [args[i + 1] for i, arg in enumerate(args) if arg == "--config"]
    return created


def test_kafka_init_creates_exactly_the_registry_topics_and_their_dlqs(compose: dict[str, Any], tmp_path: Path) -> None:
    init = compose["services"]["kafka-init"]
    assert init["image"] == compose["services"]["kafka"]["image"]
    assert init["depends_on"]["kafka"]["condition"] == "service_healthy"
    mounts = {v.split(":")[1]: v.split(":")[0] for v in init["volumes"]}
    assert init["command"][-1] in mounts and (ROOT / mounts[init["command"][-1]]).resolve() == (
        ROOT / "deploy" / "kafka" / "create-topics.sh"
    )
    env = environment_of(init)
    assert env["BOOTSTRAP_SERVER"] == internal_kafka_listener(compose)

    created = run_create_topics(env, tmp_path)
    assert set(created) == set(TOPICS) | {dlq_topic(t) for t in TOPICS}
    assert {t: created[t] for t in TOPICS} == dict.fromkeys(TOPICS, 6)


def test_create_topics_defaults_to_the_registry_topics(tmp_path: Path) -> None:
    configs: dict[str, list[str]] = {}
    created = run_create_topics({}, tmp_path, configs)
    assert set(created) == set(TOPICS) | {dlq_topic(t) for t in TOPICS}
    # The main topics keep the broker's retention; dead letters 30 days (PROCESSED_EVENTS_RETENTION_DAYS is above).
    assert {t: configs[t] for t in TOPICS} == {t: [] for t in TOPICS}
    assert {configs[dlq_topic(t)][0] for t in TOPICS} == {"retention.ms=2592000000"}


def test_create_topics_can_keep_the_main_topics_for_ever(tmp_path: Path) -> None:
    configs: dict[str, list[str]] = {}
    run_create_topics({"MAIN_RETENTION_MS": "-1"}, tmp_path, configs)
    assert {t: configs[t] for t in TOPICS} == {t: ["retention.ms=-1"] for t in TOPICS}
    assert {configs[dlq_topic(t)][0] for t in TOPICS} == {"retention.ms=2592000000"}


@pytest.mark.parametrize("service", ["crm", "cem"])
def test_dockerfile_serves_the_app_factory_on_the_service_port(service: str) -> None:
    text = (ROOT / "services" / f"{service}-service" / "Dockerfile").read_text()
    port = PORTS[service]
    cmd_line = re.search(r"^CMD (\[.*\])$", text, re.M)
    assert cmd_line, "the Dockerfile has no exec-form CMD"
    cmd = json.loads(cmd_line.group(1))
    assert cmd == ["uvicorn", "--factory", f"{service}.main:create_app", "--host", "0.0.0.0", "--port", str(port)]
    assert re.search(rf"^EXPOSE {port}$", text, re.M)
    assert f"http://127.0.0.1:{port}/health" in text
    assert re.search(r"^USER (?!root|0\b)", text, re.M), "the image must not run as root"
    assert f"COPY services/{service}-service/requirements.lock ./" in text  # its own lock (tests/test_dependencies.py)


# --- deploy/k8s ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def k8s_objects() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    manifests = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == manifests


def container_env(container: dict[str, Any], objects: list[dict[str, Any]]) -> dict[str, str]:
    """The environment a container gets: envFrom ConfigMaps and Secrets, then env."""
    by_ref = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(by_ref[("ConfigMap", source["configMapRef"]["name"])]["data"])
        else:
            secret = by_ref[("Secret", source["secretRef"]["name"])]
            env.update(secret.get("stringData", {}))
            env.update({k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()})
    for item in container.get("env", []):
        env[item["name"]] = item.get("value", "")
    return {k: str(v) for k, v in env.items()}


def workload_containers(objects: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any], str]]:
    """(workload, container, service) for every Deployment and Job container."""
    found = []
    for obj in objects:
        if obj["kind"] in ("Deployment", "Job"):
            for container in obj["spec"]["template"]["spec"]["containers"]:
                match = re.fullmatch(r"cx/(crm|cem)-service(:.*)?", container["image"])
                assert match, f"{obj['metadata']['name']}: unexpected image {container['image']}"
                found.append((obj, container, match.group(1)))
    return found


def test_k8s_containers_get_only_real_settings_that_parse(
    k8s_objects: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    containers = workload_containers(k8s_objects)
    assert {(o["kind"], service) for o, _, service in containers} == {
        (kind, service) for kind in ("Deployment", "Job") for service in ("crm", "cem")
    }
    for obj, container, service in containers:
        prefix = service.upper()
        env = container_env(container, k8s_objects)
        where = f"{obj['kind']} {obj['metadata']['name']}"
        assert_only_real_settings(prefix, env, where)
        assert f"{prefix}_DATABASE_URL" in env and f"{prefix}_KAFKA_BOOTSTRAP_SERVERS" in env, where
        settings = settings_with(prefix, env, monkeypatch)
        assert make_url(settings.database_url).drivername == "postgresql+asyncpg", where
        assert settings.kafka_enable_idempotence is True, where


def test_k8s_deployments_probe_ready_and_health_and_jobs_migrate(k8s_objects: list[dict[str, Any]]) -> None:
    services = {o["metadata"]["name"]: o for o in k8s_objects if o["kind"] == "Service"}
    for obj, container, service in workload_containers(k8s_objects):
        if obj["kind"] == "Job":
            assert container["command"] == [service, "migrate"]
            assert obj["spec"]["template"]["spec"]["restartPolicy"] == "Never"
            continue
        (port,) = container["ports"]
        assert port["containerPort"] == PORTS[service]
        assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": port["name"]}
        assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": port["name"]}
        svc = services[service]
        assert svc["spec"]["selector"].items() <= obj["spec"]["template"]["metadata"]["labels"].items()
        assert svc["spec"]["ports"][0]["targetPort"] in (port["name"], port["containerPort"])
        assert svc["spec"]["ports"][0]["port"] == PORTS[service]
