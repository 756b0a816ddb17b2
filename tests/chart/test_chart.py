"""The Helm chart lints, renders valid Kubernetes objects and refuses bad values."""

from __future__ import annotations

import ast
import copy
import json

import jsonschema
import pytest
import yaml

from tests.chart.conftest import (
    CHART,
    KUBERNETES_VERSIONS,
    NAMESPACE,
    ROOT,
    SCHEMAS,
    VALUES_FILES,
    find,
    helm,
    kubernetes_validate,
    render,
)

CRD_FILES = {
    "ServiceMonitor": SCHEMAS / "crd-servicemonitors.yaml",
    "PrometheusRule": SCHEMAS / "crd-prometheusrules.yaml",
}
SCHEMA = json.loads((CHART / "values.schema.json").read_text())


def _python_patterns(node):
    """CRD patterns are Go regexes: move inline flags like (?i) to the front for Python."""
    if isinstance(node, dict):
        return {
            key: (
                f"(?i){value.replace('(?i)', '')}"
                if key == "pattern" and isinstance(value, str) and "(?i)" in value
                else _python_patterns(value)
            )
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_python_patterns(item) for item in node]
    return node


def _crd_validator(kind: str) -> jsonschema.Draft7Validator:
    crd = next(d for d in yaml.safe_load_all(CRD_FILES[kind].read_text()) if d)
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    return jsonschema.Draft7Validator(_python_patterns(version["schema"]["openAPIV3Schema"]))


def _container(documents: list[dict]) -> dict:
    return find(documents, "Deployment")["spec"]["template"]["spec"]["containers"][0]


# --- lint and validation ------------------------------------------------------------------
@pytest.mark.parametrize("name", list(VALUES_FILES))
def test_helm_lint_strict(name):
    args = ["lint", "--strict", str(CHART), "--namespace", NAMESPACE]
    for path in VALUES_FILES[name]:
        args += ["-f", str(path)]
    result = helm(*args, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("name", list(VALUES_FILES))
def test_rendered_manifests_are_valid(name):
    for version in KUBERNETES_VERSIONS:
        # rendered for that version: the chart adapts to .Capabilities.KubeVersion
        documents = render(*VALUES_FILES[name], kube_version=version)
        builtin = [d for d in documents if d["kind"] not in CRD_FILES]
        kubernetes_validate(builtin, version)
    for document in documents:
        if document["kind"] in CRD_FILES:
            _crd_validator(document["kind"]).validate(document)


def test_chart_renders_for_its_oldest_kubernetes():
    result = helm(
        "template", "q", str(CHART), "--kube-version", "1.25.0", "-f",
        str(VALUES_FILES["everything-on"][0]), check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    result = helm("template", "q", str(CHART), "--kube-version", "1.24.0", check=False)
    assert result.returncode != 0 and "kubeVersion" in result.stderr


def test_validation_catches_a_broken_object(rendered_all_on):
    monitor = copy.deepcopy(find(rendered_all_on, "ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["interval"] = "thirty seconds"
    with pytest.raises(jsonschema.ValidationError):
        _crd_validator("ServiceMonitor").validate(monitor)
    deployment = copy.deepcopy(find(rendered_all_on, "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(AssertionError):
        kubernetes_validate([deployment])


def test_monitoring_objects_render_without_their_crds_unless_checked():
    kinds = {d["kind"] for d in render(*VALUES_FILES["everything-on"], apis=False)}
    assert set(CRD_FILES) <= kinds  # helm template, kustomize, GitOps: no cluster to ask
    checked = ("serviceMonitor.checkCapability=true", "prometheusRule.checkCapability=true")
    everything_on = VALUES_FILES["everything-on"]
    kinds = {d["kind"] for d in render(*everything_on, sets=checked, apis=False)}
    assert not kinds & set(CRD_FILES)  # guarded: no CRD, no object
    kinds = {d["kind"] for d in render(*everything_on, sets=checked)}
    assert set(CRD_FILES) <= kinds


def test_everything_on_and_off(rendered_all_on):
    kinds = sorted(d["kind"] for d in rendered_all_on)
    assert kinds == sorted(
        [
            "ConfigMap",
            "ConfigMap",  # settings and the dashboard
            "Deployment",
            "HorizontalPodAutoscaler",
            "Ingress",
            "Job",  # quartstack migrate, a pre-install/pre-upgrade hook ...
            "NetworkPolicy",
            "Pod",
            "PodDisruptionBudget",
            "PrometheusRule",
            "Secret",
            "Secret",  # ... with its own copy of the AppRole Secret
            "Service",
            "ServiceAccount",
            "ServiceAccount",  # ... and its own ServiceAccount (hooks run before the release's)
            "ServiceMonitor",
        ]
    )
    assert find(rendered_all_on, "ServiceMonitor")["metadata"]["labels"]["release"] == (
        "kube-prometheus-stack"
    )
    assert find(rendered_all_on, "PrometheusRule")["metadata"]["labels"]["release"] == (
        "kube-prometheus-stack"
    )
    deployment = find(rendered_all_on, "Deployment")
    assert "replicas" not in deployment["spec"]  # the HPA owns it
    off = {d["kind"] for d in render(*VALUES_FILES["everything-off"])}
    assert off == {"ConfigMap", "Deployment", "Pod", "Service"}


def test_dashboard_configmap_is_labelled_for_the_sidecar(rendered_all_on):
    dashboard = find(rendered_all_on, "ConfigMap", "-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    content = json.loads(dashboard["data"]["quartstack.json"])
    titles = " ".join(p["title"] for p in content["panels"]).lower()
    for topic in ("request rate", "5xx", "latency", "circuit", "cache hit", "rate limit"):
        assert topic in titles, topic
    for panel in content["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"], panel


# --- values schema --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad",
    [
        "replicaCont=3",
        "serviceMonitor.enable=true",
        "probes.liveness.paht=/x",
        "securityContext.readOnlyRootFileSystem=true",
        "resources.limit.cpu=1",
        "config.LOG_LEVLE=DEBUG",
        "config.POSTGRES_PASSWORD=hunter2",
        "config.PORT=9000",
        "config.LOG_LEVEL=verbose",
        "config.REQUIRED_BACKENDS=vault\\,kafka",
        "config.RATE_LIMIT_DEFAULT=lots",
        "vault.auth=kerberos",
        "vault.address=vault:8200",
        "backends.redis.nodes=redis-0\\,redis-1",
        "replicaCount=abc",
        "service.port=70000",
        "serviceMonitor.interval=30 seconds",
        "ingress.hosts[0].paths[0].pathType=Wildcard",
        "server=granian",
        "config.SERVER=uvicorn",
    ],
)
def test_schema_rejects_bad_values(bad):
    result = helm("template", "quartstack", str(CHART), "--set", bad, check=False)
    assert result.returncode != 0, bad
    assert "values don't meet the specifications of the schema" in result.stderr, result.stderr


@pytest.mark.parametrize(
    "good",
    [
        "config.LOG_LEVEL=debug",
        "config.REQUIRED_BACKENDS=vault\\,redis",
        "config.RATE_LIMIT_DEFAULT=250",
        "config.MONGODB_AUTH_SOURCE=admin",
        "resources.limits.cpu=500m",
        "backends.redis.nodes=a=r-0.r:6379\\,b=[::1]:7000\\,10.0.0.3:7001",
    ],
)
def test_schema_accepts_good_values(good):
    result = helm("template", "quartstack", str(CHART), "--set", good, check=False)
    assert result.returncode == 0, result.stderr


def test_schema_forbids_unknown_keys_everywhere():
    def walk(node, path):
        if "$ref" in node:  # the Kubernetes structures in definitions
            node = SCHEMA["definitions"][node["$ref"].rsplit("/", 1)[1]]
        if node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, path
            for key, child in node["properties"].items():
                walk(child, f"{path}.{key}")
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}[]")

    walk(SCHEMA, "values")
    assert SCHEMA["additionalProperties"] is False


def test_schema_config_keys_are_the_apps_settings():
    """`config` accepts exactly the app's settings minus the chart-managed ones and secrets,
    read from src/quartstack/settings.py (a new setting must be added to the schema)."""
    tree = ast.parse((ROOT / "src" / "quartstack" / "settings.py").read_text())
    settings = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Settings")
    fields = {
        s.target.id.upper(): ast.unparse(s.annotation)
        for s in settings.body
        if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
    }
    managed = {"PORT", "HOST", "WORKERS", "SHUTDOWN_GRACE_SECONDS", "SHUTDOWN_CLOSE_SECONDS"}
    managed |= {"SERVER"}  # the top-level `server` value
    managed |= {"REDIS_NODES", "REDIS_KEY_PREFIX"}
    managed |= {f"VAULT_{n}" for n in ("ADDR", "MOUNT", "APPROLE_DIR", "TOKEN_FILE")}
    for backend in ("POSTGRES", "MYSQL", "MONGODB", "REDIS", "RABBITMQ"):
        managed |= {f"{backend}_HOST", f"{backend}_PORT"}
    secrets = {name for name, annotation in fields.items() if "SecretStr" in annotation}
    assert {"VAULT_TOKEN", "POSTGRES_PASSWORD"} <= secrets
    assert managed <= set(fields), managed - set(fields)
    expected = set(fields) - managed - secrets
    accepted = set(SCHEMA["properties"]["config"]["properties"])
    assert accepted == expected, {"add": expected - accepted, "remove": accepted - expected}
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values["config"]) <= accepted


def test_the_server_value_sets_server_for_the_api_and_the_worker(rendered_defaults):
    assert find(rendered_defaults, "ConfigMap", "quartstack")["data"]["SERVER"] == "hypercorn"
    chosen = render(sets=("server=uvicorn",))
    assert find(chosen, "ConfigMap", "quartstack")["data"]["SERVER"] == "uvicorn"
    production = render(CHART / "values-prod.yaml")
    assert find(production, "ConfigMap", "quartstack")["data"]["SERVER"] == "uvicorn"


# --- template guards ----------------------------------------------------------------------
def test_grace_period_must_cover_prestop_and_drain():
    for sets in (
        ("shutdown.terminationGracePeriodSeconds=25",),  # == 5 + 20
        ("shutdown.shutdownGraceSeconds=40",),
        ("shutdown.preStopSleepSeconds=15",),
    ):
        args = [a for s in sets for a in ("--set", s)]
        result = helm("template", "q", str(CHART), *args, check=False)
        assert result.returncode != 0, sets
        assert "terminationGracePeriodSeconds" in result.stderr
    ok = (
        "--set",
        "shutdown.shutdownGraceSeconds=40",
        "--set",
        "shutdown.terminationGracePeriodSeconds=55",
    )
    assert helm("template", "q", str(CHART), *ok, check=False).returncode == 0


@pytest.mark.parametrize(
    ("sets", "renders"),
    [
        ((), True),  # 5 + 1 + 20 + 5 + 2 = 33 <= 35
        (("shutdown.terminationGracePeriodSeconds=33",), True),
        (("shutdown.terminationGracePeriodSeconds=32",), False),
        (("config.SHUTDOWN_DRAIN_SECONDS=3",), True),  # 35
        (("config.SHUTDOWN_DRAIN_SECONDS=3.5",), False),
        (("shutdown.closeSeconds=8",), False),
        (("shutdown.closeSeconds=7", "shutdown.terminationGracePeriodSeconds=37"), True),
    ],
)
def test_grace_period_covers_the_whole_shutdown_budget(sets, renders):
    """preStop + drain + grace + close + 2 s margin <= terminationGracePeriodSeconds: the
    app exits within drain + grace + close after SIGTERM (tests/foundation/test_process.py)."""
    args = [a for s in sets for a in ("--set", s)]
    result = helm("template", "q", str(CHART), *args, check=False)
    assert (result.returncode == 0) is renders, result.stderr
    if renders:
        config = next(
            d["data"] for d in yaml.safe_load_all(result.stdout) if d and d["kind"] == "ConfigMap"
        )
        assert float(config["SHUTDOWN_CLOSE_SECONDS"]) > 0
    else:
        assert "terminationGracePeriodSeconds" in result.stderr


def test_startup_probe_must_outlast_the_apps_startup_timeout():
    result = helm(
        "template", "q", str(CHART), "--set", "config.STARTUP_TIMEOUT_SECONDS=300", check=False
    )
    assert result.returncode != 0 and "STARTUP_TIMEOUT_SECONDS" in result.stderr
    result = helm(
        "template", "q", str(CHART), "--set", "config.STARTUP_TIMEOUT_SECONDS=300",
        "--set", "probes.startup.failureThreshold=200", check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_approle_without_credentials_is_refused():
    result = helm("template", "q", str(CHART), "--set", "vault.address=http://v:8200", check=False)
    assert result.returncode != 0 and "vault.approle.existingSecret" in result.stderr


# --- what the Deployment does --------------------------------------------------------------
def test_deployment_is_hardened_and_drains(rendered_defaults):
    deployment = find(rendered_defaults, "Deployment")
    pod = deployment["spec"]["template"]
    spec = pod["spec"]
    container = spec["containers"][0]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 10001
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec["enableServiceLinks"] is False
    assert spec["automountServiceAccountToken"] is False
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    assert security["allowPrivilegeEscalation"] is False
    assert {"checksum/config", "checksum/approle"} <= set(pod["metadata"]["annotations"])
    assert container["resources"]["limits"] and container["resources"]["requests"]
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    config = find(rendered_defaults, "ConfigMap")["data"]
    prestop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    grace = float(config["SHUTDOWN_GRACE_SECONDS"])
    assert spec["terminationGracePeriodSeconds"] > prestop + grace
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] > 60  # STARTUP_TIMEOUT_SECONDS
    assert container["livenessProbe"]["failureThreshold"] >= 3


def test_checksum_annotation_follows_the_settings():
    before = find(render(), "Deployment")["spec"]["template"]["metadata"]["annotations"]
    after = find(render(sets=("config.LOG_LEVEL=DEBUG",)), "Deployment")
    after = after["spec"]["template"]["metadata"]["annotations"]
    assert before["checksum/config"] != after["checksum/config"]
    assert before["checksum/approle"] == after["checksum/approle"]


def test_probes_and_ports_are_the_apps_real_ones(rendered_all_on):
    container = _container(rendered_all_on)
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["startupProbe"]["httpGet"]["path"] == "/health/startup"
    port = container["ports"][0]
    assert port["name"] == "http" and port["containerPort"] == 8000
    assert container["args"] == ["serve", "--bind", "0.0.0.0:8000"]
    assert "command" not in container  # the image's ENTRYPOINT (quartstack)
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] == "http"
    monitor = find(rendered_all_on, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0] == {
        "port": "http",
        "path": "/metrics",
        "interval": "30s",
        "scrapeTimeout": "10s",
    }
    service = find(rendered_all_on, "Service")
    assert service["spec"]["ports"][0] == {
        "port": 8000,
        "targetPort": "http",
        "protocol": "TCP",
        "name": "http",
    }
    assert monitor["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    config = find(rendered_all_on, "ConfigMap", "quartstack")["data"]
    assert config["PORT"] == "8000"
    assert config["VAULT_ADDR"] == "http://vault:8200"
    assert config["VAULT_APPROLE_DIR"] == "/vault/approle"
    assert config["POSTGRES_HOST"] == "postgres" and config["POSTGRES_PORT"] == "5432"
    assert config["REDIS_NODES"] == "redis-1=redis-0:6379,redis-2=redis-1:6379"
    assert "REDIS_HOST" not in config
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/vault/approle"]["readOnly"] is True
    secret = find(rendered_all_on, "Secret", "quartstack-approle")
    assert set(secret["stringData"]) == {"role-id", "secret-id"}
    downward = [e["name"] for e in container["env"] if "valueFrom" in e]
    assert downward == ["K8S_POD_NAME", "K8S_NAMESPACE_NAME"]  # tracing's resource attributes
    own = [e for e in container["env"] if "valueFrom" not in e]
    assert own == [
        {"name": "OTEL_SERVICE_NAME", "value": "quartstack-ci"},
        {"name": "RATE_LIMIT_HEALTH", "value": "300"},
    ]
    assert mounts["/etc/vault-ca"]["name"] == "vault-ca"
    volumes = find(rendered_all_on, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "vault-ca", "secret": {"secretName": "vault-ca"}} in volumes
    assert config["VAULT_CACERT"] == "/etc/vault-ca/ca.crt"
    assert config["LOG_LEVEL"] == "INFO"  # values merge: untouched defaults stay


def test_vault_agent_mode_uses_injector_and_token_file():
    documents = render(*VALUES_FILES["vault-agent"])
    pod = find(documents, "Deployment")["spec"]["template"]
    annotations = pod["metadata"]["annotations"]
    assert annotations["vault.hashicorp.com/agent-inject"] == "true"
    assert annotations["vault.hashicorp.com/agent-inject-token"] == "true"
    assert annotations["vault.hashicorp.com/role"] == "quartstack"
    assert pod["spec"]["automountServiceAccountToken"] is True  # the agent's Kubernetes auth
    config = find(documents, "ConfigMap")["data"]
    assert config["VAULT_TOKEN_FILE"] == "/vault/secrets/token"
    assert "VAULT_APPROLE_DIR" not in config
    assert not any(d["kind"] == "Secret" for d in documents)


def test_redis_key_prefix_is_the_release_name_unless_set():
    """Two releases sharing one Redis never share cached responses or rate limits."""

    def prefix(release: str, *sets: str) -> str | None:
        args = ["template", release, str(CHART), "--set", "backends.redis.host=redis"]
        for item in sets:
            args += ["--set", item]
        documents = [d for d in yaml.safe_load_all(helm(*args).stdout) if d]
        return find(documents, "ConfigMap", "quartstack")["data"].get("REDIS_KEY_PREFIX")

    assert prefix("shop-a") == "shop-a"
    assert prefix("shop-b", "backends.redis.keyPrefix=shared-cache") == "shared-cache"
    without_redis = find(render(*VALUES_FILES["everything-off"]), "ConfigMap")["data"]
    assert "REDIS_KEY_PREFIX" not in without_redis


def test_without_vault_nothing_vault_is_rendered():
    documents = render(*VALUES_FILES["everything-off"])
    config = find(documents, "ConfigMap")["data"]
    assert not any(key.startswith("VAULT_") for key in config)
    container = _container(documents)
    assert [m["mountPath"] for m in container["volumeMounts"]] == ["/tmp"]


def test_network_policy_opens_exactly_the_configured_ports(rendered_all_on):
    policy = find(rendered_all_on, "NetworkPolicy")["spec"]
    dns, backends = policy["egress"]
    assert {p["port"] for p in dns["ports"]} == {53}
    # Vault, the backends and the OTLP collector (otel.endpoint)
    assert {p["port"] for p in backends["ports"]} == {8200, 5432, 3306, 27017, 6379, 5672, 4318}
    assert policy["ingress"][0]["ports"] == [{"port": "http", "protocol": "TCP"}]
    documents = render(
        sets=(
            "networkPolicy.enabled=true",
            "vault.address=https://vault.example",
            "vault.auth=none",
            "backends.redis.nodes=a=r0:7000\\,b=r1:7001",
            "networkPolicy.ingressFrom[0].namespaceSelector.matchLabels.team=edge",
        )
    )
    policy = find(documents, "NetworkPolicy")["spec"]
    assert {p["port"] for p in policy["egress"][1]["ports"]} == {443, 7000, 7001}
    peers = policy["ingress"][0]["from"]
    test_pod = find(documents, "Pod")["metadata"]["labels"]
    assert any(
        p.get("podSelector", {}).get("matchLabels", {}).items() <= test_pod.items() for p in peers
    )
    nothing = render(sets=("networkPolicy.enabled=true",))
    assert len(find(nothing, "NetworkPolicy")["spec"]["egress"]) == 1  # DNS only, never "any"


def test_helm_test_pod_calls_ready_and_an_api_route(rendered_defaults):
    pod = find(rendered_defaults, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = pod["spec"]["containers"][0]["command"][-1]
    assert "/health/ready" in script and 'base + "/"' in script
    assert "http://quartstack:8000" in script
    # The Service, PDB and NetworkPolicy select application pods only, never the test pod.
    selector = find(rendered_defaults, "Service")["spec"]["selector"]
    assert not selector.items() <= pod["metadata"]["labels"].items()
    security = pod["spec"]["containers"][0]["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]


def test_notes_render():
    result = helm(
        "install", "q", str(CHART), "--dry-run=client", "-f",
        str(VALUES_FILES["everything-on"][0]), check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    assert "port-forward svc/q-quartstack" in notes and "helm test q" in notes
    assert "no monitoring.coreos.com/v1 ServiceMonitor CRD" in notes


# --- documentation -------------------------------------------------------------------------
def test_chart_readme_lists_every_value():
    """Every leaf of values.yaml and every value the schema knows is in the chart README."""
    readme = (CHART / "README.md").read_text()

    def value_leaves(node, prefix=""):
        for key, child in node.items():
            if isinstance(child, dict) and child:
                yield from value_leaves(child, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}"

    def schema_leaves(node, prefix=""):
        for key, child in node.get("properties", {}).items():
            if "properties" in child and child.get("additionalProperties") is False:
                yield from schema_leaves(child, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}"

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    # Kubernetes' own structures are documented by Kubernetes; their defaults are listed.
    kubernetes = ("podSecurityContext.", "securityContext.", "resources.")
    documented = {p for p in schema_leaves(SCHEMA) if not p.startswith(kubernetes)}
    paths = set(value_leaves(values)) | documented
    assert len(paths) > 100
    missing = sorted(path for path in paths if f"`{path}`" not in readme)
    assert not missing, missing
