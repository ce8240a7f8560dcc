"""Deployment files: the compose file against the Compose schema, the nginx configs with the
real nginx, gunicorn's settings, and `make up`'s process runner end to end."""

from __future__ import annotations

import json
import os
import re
import runpy
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tooling.procs import free_port
from tooling.up import (
    NGINX_DIR,
    ROOT,
    StackConfig,
    binary,
    prepare,
    proxy_secret,
    render_nginx,
    supervisord_conf,
)

SHARED_SCHEMA = ROOT.parent / "shared" / "schemas" / "compose-spec.json"
VENDORED_SCHEMA = Path(__file__).resolve().parent / "schemas" / "compose-spec.json"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def test_compose_validates_against_the_compose_schema(compose: dict[str, Any]) -> None:
    schema_path = SHARED_SCHEMA if SHARED_SCHEMA.exists() else VENDORED_SCHEMA
    schema = json.loads(schema_path.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema).validate(compose)


def test_compose_schema_check_can_fail(compose: dict[str, Any]) -> None:
    schema = json.loads(VENDORED_SCHEMA.read_text())
    broken = {**compose, "services": {"api": {**compose["services"]["api"], "ports": 8080}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema).validate(broken)


def test_redis_service_has_aof_volume_and_healthcheck(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    assert "--appendonly" in redis["command"] and "yes" in redis["command"]
    assert any(v.endswith(":/data") for v in redis["volumes"])
    assert redis["volumes"][0].split(":")[0] in compose["volumes"]
    assert "redis-cli" in " ".join(redis["healthcheck"]["test"])  # a shell line now: with REDISCLI_AUTH


def test_api_service_scales(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]
    assert "container_name" not in api and "ports" not in api
    assert api["build"]["dockerfile"] == "deploy/Dockerfile"
    assert "/readyz" in " ".join(api["healthcheck"]["test"])
    grace_s = int(api["stop_grace_period"].rstrip("s"))
    gunicorn_conf = (ROOT / "deploy" / "gunicorn.conf.py").read_text()
    graceful_s = int(re.search(r"^graceful_timeout = (\d+)", gunicorn_conf, re.M).group(1))  # type: ignore[union-attr]
    assert graceful_s < grace_s


def test_nginx_service_publishes_8080_after_healthy_api(compose: dict[str, Any]) -> None:
    nginx = compose["services"]["nginx"]
    assert nginx["ports"] == ["8080:8080"]
    assert nginx["depends_on"]["api"]["condition"] == "service_healthy"
    major, minor, patch = (int(x) for x in nginx["image"].split(":")[1].split("-")[0].split("."))
    assert (major, minor, patch) >= (1, 27, 3), "`server ... resolve` needs nginx 1.27.3+"
    mounted = {v.split(":")[0] for v in nginx["volumes"]}
    confs = ("compose.conf", "http.conf", "server.conf", "proxy.conf", "first-resolver.envsh")
    assert mounted == {*(f"./deploy/nginx/{name}" for name in confs), "./web", "nginx-logs"}
    # The image's entrypoint fills ${PROXY_SECRET} into templates/, the api has the same.
    assert "./deploy/nginx/compose.conf:/etc/nginx/templates/default.conf.template:ro" in nginx["volumes"]
    assert nginx["environment"]["PROXY_SECRET"] == compose["services"]["api"]["environment"]["PROXY_SECRET"]
    assert "${PROXY_SECRET:?" in nginx["environment"]["PROXY_SECRET"]


def test_dockerfile_is_pinned_slim_and_non_root() -> None:
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11\.\d+-slim", text, re.M)
    assert re.search(r"^USER tickets$", text, re.M)
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            assert "==" in line, line


def _without_comments(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def _outside_upstream(lines: list[str]) -> list[str]:
    out, depth = [], 0
    for ln in lines:
        if ln.startswith("upstream "):
            depth = 1
            continue
        if depth:
            depth += ln.count("{") - ln.count("}")
            continue
        out.append(ln)
    return out


def test_compose_and_local_nginx_share_everything_but_upstream(tmp_path: Path) -> None:
    cfg = StackConfig(port=8080, var_dir=tmp_path)
    local = _outside_upstream(_without_comments(render_nginx(cfg, [8081])))
    composed = _outside_upstream(_without_comments((NGINX_DIR / "compose.conf").read_text()))
    # Both pull the shared files in, and add nothing of their own to the server block.
    for lines, prefix in ((local, str(NGINX_DIR)), (composed, "/etc/nginx/tickets")):
        assert f"include {prefix}/http.conf;" in lines
        assert f"include {prefix}/server.conf;" in lines
        server = [ln.split()[0] for ln in lines[lines.index("server {") + 1:]]
        # Compose logs to stdout and, for mtail, to the volume both share; the local stack to a file.
        logs = server.count("access_log")
        assert logs == (2 if prefix.startswith("/etc") else 1)
        assert [w for w in server if w != "access_log"][:3] == ["listen", "limit_req", "include"]


def test_local_nginx_config_passes_nginx_t(tmp_path: Path) -> None:
    prepare(StackConfig(port=free_port(), var_dir=tmp_path), [free_port(), free_port()])
    assert "tickets_api" in (tmp_path / "nginx.conf").read_text()


def test_compose_nginx_config_passes_nginx_t_bar_the_resolve_parameter(tmp_path: Path) -> None:
    """Debian's nginx (1.22) lacks `resolve`, so that one parameter is dropped for the check."""
    conf = (NGINX_DIR / "compose.conf").read_text()
    conf = conf.replace("/etc/nginx/tickets", str(NGINX_DIR)).replace(" resolve ", " ")
    conf = conf.replace("server api:8000", "server 127.0.0.1:8000")
    conf = conf.replace("listen 8080;", f"listen 127.0.0.1:{free_port()};")
    conf = conf.replace("${PROXY_SECRET}", "0123456789abcdef0123").replace("${TICKETS_RESOLVER}", "127.0.0.11")
    conf = conf.replace("/var/log/tickets/", f"{tmp_path}/")
    for d in ("client_body", "proxy"):
        (tmp_path / d).mkdir()
    (tmp_path / "proxy.conf").write_text((NGINX_DIR / "proxy.conf").read_text())
    main = (
        f"pid {tmp_path}/nginx.pid; error_log stderr; events {{}}\n"
        f"http {{ client_body_temp_path {tmp_path}/client_body; proxy_temp_path {tmp_path}/proxy;\n"
        f"{conf}\n}}\n"
    )
    (tmp_path / "nginx.conf").write_text(main)
    r = subprocess.run([binary("nginx"), "-t", "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_gunicorn_keepalive_outlives_nginx_upstream_keepalive() -> None:
    # The deployed value: gunicorn's config read as gunicorn reads it, KEEPALIVE_S unset.
    saved = os.environ.pop("KEEPALIVE_S", None)
    try:
        keepalive_s = int(runpy.run_path(str(ROOT / "deploy" / "gunicorn.conf.py"))["keepalive"])
    finally:
        if saved is not None:
            os.environ["KEEPALIVE_S"] = saved
    for conf in (NGINX_DIR / "compose.conf", NGINX_DIR / "local.conf.template"):
        nginx_s = int(re.search(r"keepalive_timeout (\d+)s;", conf.read_text()).group(1))  # type: ignore[union-attr]
        assert keepalive_s > nginx_s


def test_supervisord_starts_redis_only_without_redis_url(tmp_path: Path) -> None:
    own = supervisord_conf(StackConfig(var_dir=tmp_path, replicas=3))
    programs = re.findall(r"^\[program:([\w-]+)\]", own, re.M)
    monitoring = ["redis-exporter", "mtail", "prometheus"]
    assert programs == ["redis", "api1", "api2", "api3", "processor", "nginx", *monitoring]
    assert "--appendonly yes" in own and own.count("autorestart=true") == 9
    assert own.count("stopasgroup=true") == own.count("killasgroup=true") == 9
    shared = supervisord_conf(StackConfig(var_dir=tmp_path, redis_url="redis://elsewhere:6379/0", monitoring=False))
    assert re.findall(r"^\[program:([\w-]+)\]", shared, re.M) == ["api1", "api2", "processor", "nginx"]


def test_the_proxy_secret_is_made_once_and_kept_private(tmp_path: Path) -> None:
    cfg = StackConfig(var_dir=tmp_path)
    first = proxy_secret(cfg)
    assert len(first) == 64 and proxy_secret(cfg) == first
    assert (tmp_path / "proxy-secret").stat().st_mode & 0o077 == 0
    assert first in render_nginx(cfg, [8081]) and first not in supervisord_conf(cfg)


def test_processor_and_monitoring_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    processor = services["processor"]
    assert processor["command"][-1] == "service.processor" and "container_name" not in processor
    assert services["api"]["environment"]["PROMETHEUS_MULTIPROC_DIR"]
    for name in ("prometheus", "redis-exporter", "mtail", "grafana"):
        assert services[name]["profiles"] == ["monitoring"]
    assert "exec /redis_exporter --redis.addr= " in services["redis-exporter"]["command"][0]  # multi-target
    prom = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in prom["scrape_configs"]}
    assert jobs["tickets-api"]["dns_sd_configs"][0]["names"] == ["api"]
    assert jobs["tickets-processor"]["static_configs"][0]["targets"] == ["processor:9100"]
    assert jobs["redis"]["static_configs"][0]["targets"] == ["redis://redis:6379"]
    assert jobs["redis"]["relabel_configs"][-1]["replacement"] == "redis-exporter:9121"
    assert jobs["nginx"]["static_configs"][0]["targets"] == ["mtail:3903"]
    # nginx writes the log mtail reads into the volume they share.
    assert "nginx-logs:/var/log/tickets" in services["nginx"]["volumes"]
    assert "nginx-logs:/var/log/tickets:ro" in services["mtail"]["volumes"]


def _schema() -> dict[str, Any]:
    schema_path = SHARED_SCHEMA if SHARED_SCHEMA.exists() else VENDORED_SCHEMA
    loaded: dict[str, Any] = json.loads(schema_path.read_text())
    return loaded


def _merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Compose's merge of an override file, for mappings (what these files use)."""
    out = dict(base)
    for key, value in override.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def test_the_sentinel_override_validates_and_makes_a_sentinel_stack(compose: dict[str, Any]) -> None:
    override = yaml.safe_load((ROOT / "deploy" / "compose.sentinel.yml").read_text())
    validator = jsonschema.Draft7Validator(_schema())
    validator.validate(override)
    merged = _merged(compose, override)
    validator.validate(merged)
    services = merged["services"]
    data = [name for name in services if name == "redis" or name.startswith("redis-replica")]
    sentinels = [name for name in services if name.startswith("sentinel-")]
    assert len(data) == 3 and len(sentinels) == 3
    for name in data:
        script = services[name]["command"][0]
        assert "--appendonly yes" in script and "--min-replicas-to-write 1" in script
        assert "get-master-addr-by-name tickets" in script  # starts as the sentinels' master's replica
    assert "sentinel monitor tickets redis 6379 2" in services["sentinel-1"]["command"][0]
    for name in ("api", "processor"):
        env = services[name]["environment"]
        assert env["REDIS_SENTINELS"] == ",".join(f"{s}:26379" for s in sentinels)
        assert env["REDIS_SENTINEL_MASTER"] == "tickets"


K8S = ROOT / "deploy" / "k8s"


def _k8s_docs() -> list[dict[str, Any]]:
    return [doc for path in sorted(K8S.glob("*.yaml")) if path.name != "redis-values.yaml"
            for doc in yaml.safe_load_all(path.read_text()) if doc]


def test_the_kubernetes_manifests_validate_against_the_api_schemas() -> None:
    import kubernetes_validate

    docs = _k8s_docs()
    assert {d["kind"] for d in docs} >= {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}
    for doc in docs:
        kubernetes_validate.validate(doc, "1.31", strict=True)
    broken = {**docs[0], "spec": {**docs[0]["spec"], "replicas": "three"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.31", strict=True)


def test_the_api_deployment_is_ready_on_readyz_and_stops_gracefully() -> None:
    docs = {(d["kind"], d["metadata"]["name"]): d for d in _k8s_docs()}
    api = docs[("Deployment", "tickets-api")]["spec"]
    pod = api["template"]["spec"]
    [container] = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    graceful_s = int(re.search(r"^graceful_timeout = (\d+)", (ROOT / "deploy" / "gunicorn.conf.py").read_text(),
                               re.M)[1])  # type: ignore[index]
    pre_stop_s = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] > graceful_s + pre_stop_s
    labels = api["selector"]["matchLabels"]
    assert docs[("PodDisruptionBudget", "tickets-api")]["spec"]["selector"]["matchLabels"] == labels
    assert docs[("Service", "tickets-api")]["spec"]["selector"] == labels
    assert docs[("HorizontalPodAutoscaler", "tickets-api")]["spec"]["scaleTargetRef"]["name"] == "tickets-api"
    env = {e["name"]: e.get("value") for e in container["env"]}
    values = yaml.safe_load((K8S / "redis-values.yaml").read_text())
    assert env["REDIS_SENTINEL_MASTER"] == values["sentinel"]["masterSet"] and values["sentinel"]["enabled"]
    assert "min-replicas-to-write 1" in values["commonConfiguration"]
    assert "appendonly yes" in values["commonConfiguration"]


def test_the_kustomization_applies_every_manifest_and_generates_nginxs_configmap() -> None:
    """`kubectl apply -k deploy/`: every manifest in deploy/k8s/ (the Helm values aside), and
    nginx's ConfigMap from exactly the files its Deployment mounts, which exist."""
    kustomization = yaml.safe_load((ROOT / "deploy" / "kustomization.yaml").read_text())
    listed = {ROOT / "deploy" / path for path in kustomization["resources"]}
    assert listed == {p for p in K8S.glob("*.yaml") if p.name != "redis-values.yaml"}
    [generated] = kustomization["configMapGenerator"]
    docs = {(d["kind"], d["metadata"]["name"]): d for d in _k8s_docs()}
    volumes = docs[("Deployment", "tickets-nginx")]["spec"]["template"]["spec"]["volumes"]
    assert {"name": "config", "configMap": {"name": generated["name"]}} in volumes
    [container] = docs[("Deployment", "tickets-nginx")]["spec"]["template"]["spec"]["containers"]
    mounted = {m["subPath"] for m in container["volumeMounts"] if "subPath" in m}
    files = [ROOT / "deploy" / path for path in generated["files"]]
    assert {f.name for f in files} == mounted and all(f.parent == NGINX_DIR and f.exists() for f in files)


def test_the_kubernetes_nginx_uses_the_shared_files_and_passes_nginx_t(tmp_path: Path) -> None:
    docs = {(d["kind"], d["metadata"]["name"]): d for d in _k8s_docs()}
    [container] = docs[("Deployment", "tickets-nginx")]["spec"]["template"]["spec"]["containers"]
    mounted = {m["subPath"] for m in container["volumeMounts"] if "subPath" in m}
    assert mounted == {"http.conf", "server.conf", "proxy.conf", "k8s.conf"}
    assert all((NGINX_DIR / name).exists() for name in mounted)
    # The real nginx on the k8s config, as the image would lay it out.
    etc = tmp_path / "etc"
    (etc / "tickets").mkdir(parents=True)
    for name in ("http.conf", "server.conf"):
        (etc / "tickets" / name).write_text((NGINX_DIR / name).read_text())
    (etc / "proxy.conf").write_text((NGINX_DIR / "proxy.conf").read_text())
    site = (NGINX_DIR / "k8s.conf").read_text().replace("${PROXY_SECRET}", "x" * 32)
    site = site.replace("/etc/nginx/", f"{etc}/").replace("tickets-api:8000", "127.0.0.1:8000")
    (etc / "site.conf").write_text(site)
    (tmp_path / "logs").mkdir()
    (etc / "nginx.conf").write_text(f"pid {tmp_path}/nginx.pid; error_log stderr; events {{}}\n"
                                    f"http {{ include {etc}/site.conf; }}\n")
    done = subprocess.run([binary("nginx"), "-t", "-q", "-c", str(etc / "nginx.conf"), "-p", str(tmp_path)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_every_redis_requires_a_password_and_every_client_has_it(compose: dict[str, Any]) -> None:
    """The compose network is not trusted (the replicas check PROXY_SECRET for that reason),
    and Redis holds the secret ticket ids derive from: no Redis of any deployment answers
    without the password, and everything that talks to one has it."""
    services = compose["services"]
    assert "--requirepass" in services["redis"]["command"]
    assert "REDISCLI_AUTH" in " ".join(services["redis"]["healthcheck"]["test"])
    for name in ("api", "processor"):
        assert services[name]["environment"]["REDIS_PASSWORD"].startswith("${REDIS_PASSWORD:?"), name
    # The exporter's /scrape takes any target: the password is mapped to the one node scraped,
    # and never in the environment variable it would send to every target.
    exporter = services["redis-exporter"]
    assert "REDIS_PASSWORD" not in exporter["environment"]
    assert exporter["environment"]["TICKETS_REDIS_PASSWORD"].startswith("${REDIS_PASSWORD:?")
    scraped = [t for job in yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())[
        "scrape_configs"] if job["job_name"] == "redis" for t in job["static_configs"][0]["targets"]]
    assert scraped and all(f'"{t}": ' in exporter["command"][0] for t in scraped)
    script = exporter["command"][0]
    assert "--redis.password-file=" in script and "unset TICKETS_REDIS_PASSWORD" in script
    merged = _merged(compose, yaml.safe_load((ROOT / "deploy" / "compose.sentinel.yml").read_text()))["services"]
    for name in ("redis", "redis-replica-1", "redis-replica-2"):
        script = merged[name]["command"][0]
        assert '--requirepass "$$REDIS_PASSWORD" --masterauth "$$REDIS_PASSWORD"' in script, name
        assert merged[name]["environment"]["REDIS_PASSWORD"].startswith("${REDIS_PASSWORD:?"), name
    for name in ("sentinel-1", "sentinel-2", "sentinel-3"):
        script = merged[name]["command"][0]
        assert "requirepass $$REDIS_PASSWORD" in script and "sentinel auth-pass tickets" in script, name
    for name in ("api", "processor"):
        assert merged[name]["environment"]["REDIS_SENTINEL_PASSWORD"].startswith("${REDIS_PASSWORD:?")
    values = yaml.safe_load((K8S / "redis-values.yaml").read_text())
    assert values["auth"]["enabled"] is True and values["auth"].get("sentinel", True) is True
    docs = {(d["kind"], d["metadata"]["name"]): d for d in _k8s_docs()}
    for name in ("tickets-api", "tickets-processor"):
        [container] = docs[("Deployment", name)]["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e for e in container["env"]}
        for var in ("REDIS_PASSWORD", "REDIS_SENTINEL_PASSWORD"):
            assert env[var]["valueFrom"]["secretKeyRef"]["name"] == "tickets-redis", (name, var)
