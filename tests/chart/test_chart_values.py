"""The values users bring from other charts render into the objects they expect, and the
values that would break a cluster are refused with a message saying which."""

from __future__ import annotations

import ipaddress
import re
import shutil
from pathlib import Path

import pytest
import yaml

from tests.chart.conftest import CHART, NAMESPACE, VALUES_FILES, find, helm, render
from tests.chart.test_chart import _crd_validator

EXTRAS = VALUES_FILES["pod-extras"]
DIGEST = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"


def _pod(documents: list[dict]) -> dict:
    return find(documents, "Deployment")["spec"]["template"]["spec"]


def _refused(*sets: str) -> str:
    args = [a for s in sets for a in ("--set", s)]
    result = helm("template", "q", str(CHART), *args, check=False)
    assert result.returncode != 0, sets
    return result.stderr


def test_pod_options_render_where_kubernetes_reads_them():
    documents = render(*EXTRAS)
    deployment = find(documents, "Deployment")["spec"]
    pod = _pod(documents)
    app, sidecar = pod["containers"]
    assert app["image"] == f"ghcr.io/quartstack/quartstack@{DIGEST}"  # the digest wins
    assert sidecar["name"] == "log-shipper"
    assert [c["name"] for c in pod["initContainers"]] == ["wait-for-vault"]
    assert pod["priorityClassName"] == "high-priority"
    assert pod["runtimeClassName"] == "gvisor"
    assert pod["hostAliases"] == [{"ip": "10.0.0.10", "hostnames": ["vault.internal"]}]
    assert pod["dnsPolicy"] == "None"
    assert pod["dnsConfig"]["options"] == [{"name": "ndots", "value": "2"}]
    assert deployment["revisionHistoryLimit"] == 2
    assert deployment["strategy"] == {"type": "Recreate"}  # no rollingUpdate with Recreate
    # extra sources first: the chart's ConfigMap (PORT, hosts) is last and wins
    assert app["envFrom"] == [
        {"secretRef": {"name": "backend-passwords"}},
        {"configMapRef": {"name": "feature-flags", "optional": True}, "prefix": "FLAG_"},
        {"configMapRef": {"name": "quartstack"}},
    ]
    assert app["resources"]["limits"]["hugepages-2Mi"] == "64Mi"
    service = find(documents, "Service")
    assert service["spec"]["ports"][0]["nodePort"] == 30080
    assert service["metadata"]["labels"]["team"] == "payments"
    assert service["metadata"]["annotations"] == {
        "service.beta.kubernetes.io/aws-load-balancer-internal": "true"
    }


def test_defaults_render_none_of_the_options():
    documents = render()
    deployment = find(documents, "Deployment")["spec"]
    pod = _pod(documents)
    absent = {"initContainers", "priorityClassName", "runtimeClassName", "hostAliases"}
    assert not absent & set(pod)
    assert not {"dnsPolicy", "dnsConfig"} & set(pod)
    assert len(pod["containers"]) == 1
    assert pod["containers"][0]["image"] == "ghcr.io/quartstack/quartstack:0.1.0"
    assert pod["containers"][0]["envFrom"] == [{"configMapRef": {"name": "quartstack"}}]
    assert deployment["revisionHistoryLimit"] == 5
    assert deployment["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    service = find(documents, "Service")
    assert "annotations" not in service["metadata"]
    assert "nodePort" not in service["spec"]["ports"][0]


def test_probe_fields_and_a_whole_probe_override():
    container = _pod(render(*EXTRAS))["containers"][0]
    assert container["livenessProbe"] == {"tcpSocket": {"port": "http"}, "periodSeconds": 20}
    readiness = container["readinessProbe"]
    assert readiness["initialDelaySeconds"] == 3 and readiness["successThreshold"] == 2
    assert readiness["httpGet"] == {"path": "/health/ready", "port": "http"}
    assert container["startupProbe"]["httpGet"]["path"] == "/health/startup"
    # Kubernetes requires successThreshold 1 for liveness and startup probes
    assert "schema" in _refused("probes.liveness.successThreshold=2")
    assert "schema" in _refused("probes.readiness.override.httpGett.port=http")


STARTUP_OVERRIDE = "probes.startup.override.httpGet.port=http"


@pytest.mark.parametrize(
    ("sets", "renders"),
    [
        # an override's missing fields take Kubernetes' defaults: 10 s x 3 < 60 s
        ((STARTUP_OVERRIDE,), False),
        ((STARTUP_OVERRIDE, "probes.startup.override.failureThreshold=7"), True),
        # initialDelaySeconds counts in the startup budget
        (("config.STARTUP_TIMEOUT_SECONDS=150",), False),
        (("config.STARTUP_TIMEOUT_SECONDS=150", "probes.startup.initialDelaySeconds=31"), True),
    ],
)  # fmt: skip
def test_startup_budget_follows_the_probe_that_is_rendered(sets, renders):
    args = [a for s in sets for a in ("--set", s)]
    result = helm("template", "q", str(CHART), *args, check=False)
    assert (result.returncode == 0) is renders, result.stderr
    if not renders:
        assert "STARTUP_TIMEOUT_SECONDS" in result.stderr


@pytest.mark.parametrize(
    ("kube_version", "prestop"),
    [
        ("1.29.9", {"exec": {"command": ["sleep", "5"]}}),
        ("1.30.0", {"sleep": {"seconds": 5}}),  # native: no sleep binary needed
    ],
)
def test_prestop_sleep_is_native_from_kubernetes_1_30(kube_version, prestop):
    container = _pod(render(kube_version=kube_version))["containers"][0]
    assert container["lifecycle"] == {"preStop": prestop}


def test_extra_env_from_reaches_every_pod_that_reads_the_settings():
    """Passwords given as whole Secrets must reach the worker and the migration job too,
    or they cannot log in where the API can."""
    documents = render(*EXTRAS, sets=("worker.enabled=true", "backends.postgres.host=db"))
    expected = [
        {"secretRef": {"name": "backend-passwords"}},
        {"configMapRef": {"name": "feature-flags", "optional": True}, "prefix": "FLAG_"},
    ]
    pods = [
        find(documents, "Deployment", "quartstack")["spec"]["template"]["spec"],
        find(documents, "Deployment", "quartstack-worker")["spec"]["template"]["spec"],
        find(documents, "Job", "migrate")["spec"]["template"]["spec"],
    ]
    for pod in pods:
        assert pod["containers"][0]["envFrom"][:2] == expected


def test_lifecycle_override_replaces_the_prestop_sleep():
    container = _pod(render(*EXTRAS))["containers"][0]
    assert container["lifecycle"] == {
        "preStop": {"httpGet": {"path": "/health/live", "port": "http"}}
    }
    container = _pod(render(sets=("shutdown.preStopSleepSeconds=0",)))["containers"][0]
    assert "lifecycle" not in container  # nothing to wait for


@pytest.mark.parametrize(
    "bad",
    [
        "image.digest=latest",
        "image.digest=sha256:abc",
        "service.nodePort=http",
        "strategy.type=BlueGreen",
        "strategy.rollingUpdate.maxSurge=lots",
        "revisionHistoryLimit=-1",
        "dnsPolicy=Cluster",
        "dnsConfig.nameserver[0]=1.1.1.1",
        "hostAliases[0].hostnames[0]=x",
        "extraEnvFrom[0].secretRef.nmae=x",
        "initContainers[0].name=no-image",
        "lifecycle.preStop.sleeps.seconds=5",
        "resources.limits.cpu=lots",
        "resources.limit.cpu=1",
    ],
)
def test_schema_rejects_bad_options(bad):
    assert "values don't meet the specifications of the schema" in _refused(bad)


@pytest.mark.parametrize(
    "good",
    [
        "strategy.rollingUpdate.maxSurge=25%",
        "resources.limits.nvidia\\.com/gpu=1",
        "securityContext.procMount=Default",
        "probes.readiness.override.grpc.port=9000",
    ],
)
def test_schema_accepts_kubernetes_fields(good):
    result = helm("template", "q", str(CHART), "--set", good, check=False)
    assert result.returncode == 0, result.stderr


def test_refuses_options_kubernetes_would_reject():
    assert "service.nodePort needs service.type" in _refused("service.nodePort=30080")
    assert "dnsConfig.nameservers" in _refused("dnsPolicy=None")
    both_zero = "maxSurge and maxUnavailable cannot both be 0"
    assert both_zero in _refused("strategy.rollingUpdate.maxSurge=0")  # maxUnavailable is 0
    assert both_zero in _refused("strategy.rollingUpdate.maxSurge=0%")
    allowed = ("strategy.rollingUpdate.maxSurge=0", "strategy.rollingUpdate.maxUnavailable=1")
    assert find(render(sets=allowed), "Deployment")["spec"]["strategy"]["rollingUpdate"] == {
        "maxSurge": 0,
        "maxUnavailable": 1,
    }
    assert render(sets=("strategy.type=Recreate", "strategy.rollingUpdate.maxSurge=0"))


# --- PodDisruptionBudget and HPA -------------------------------------------------------------
def _pdb(*sets: str, kube_version: str | None = None) -> dict:
    documents = render(sets=("podDisruptionBudget.enabled=true", *sets), kube_version=kube_version)
    return find(documents, "PodDisruptionBudget")["spec"]


@pytest.mark.parametrize(
    ("sets", "budget"),
    [
        ((), {"maxUnavailable": 1}),  # neither set
        (("podDisruptionBudget.minAvailable=1",), {"minAvailable": 1}),
        (("podDisruptionBudget.minAvailable=50%",), {"minAvailable": "50%"}),
        (("podDisruptionBudget.maxUnavailable=25%",), {"maxUnavailable": "25%"}),
        (("podDisruptionBudget.maxUnavailable=2",), {"maxUnavailable": 2}),
        # with the HPA the floor is minReplicas, not replicaCount
        (
            ("replicaCount=1", "autoscaling.enabled=true", "autoscaling.minReplicas=3",
             "podDisruptionBudget.minAvailable=2"),
            {"minAvailable": 2},
        ),
    ],
)  # fmt: skip
def test_pdb_takes_one_budget_as_count_or_percentage(sets, budget):
    spec = _pdb(*sets)
    assert {k: v for k, v in spec.items() if k in ("minAvailable", "maxUnavailable")} == budget
    assert spec["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (("replicaCount=1",), "replicaCount 1 blocks every node drain"),
        (("podDisruptionBudget.minAvailable=2",), "keeps all 2 pods (replicaCount)"),
        (("podDisruptionBudget.minAvailable=51%",), "keeps all 2 pods"),  # 1.02 -> 2
        (
            ("autoscaling.enabled=true", "autoscaling.minReplicas=3",
             "podDisruptionBudget.minAvailable=3"),
            "keeps all 3 pods (autoscaling.minReplicas)",
        ),
        (("podDisruptionBudget.maxUnavailable=0",), "maxUnavailable 0 blocks every node drain"),
        (("podDisruptionBudget.maxUnavailable=0%",), "maxUnavailable 0% blocks every node drain"),
        (
            ("podDisruptionBudget.minAvailable=1", "podDisruptionBudget.maxUnavailable=1"),
            "set minAvailable or maxUnavailable, not both",
        ),
    ],
)  # fmt: skip
def test_pdb_that_would_block_every_drain_is_refused(sets, message):
    assert message in _refused("podDisruptionBudget.enabled=true", *sets)


def test_pdb_guard_applies_only_when_the_pdb_is_rendered():
    assert render(sets=("replicaCount=1",))  # no PDB, nothing to block
    # one pod at the HPA's floor, but the HPA can add more and maxUnavailable 1 lets it go
    _pdb("replicaCount=1", "autoscaling.enabled=true", "autoscaling.minReplicas=1")


def test_unhealthy_pod_eviction_policy_follows_the_kubernetes_version():
    assert "unhealthyPodEvictionPolicy" not in _pdb(kube_version="1.26.5")
    assert _pdb(kube_version="1.27.0")["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    spec = _pdb("podDisruptionBudget.unhealthyPodEvictionPolicy=")
    assert "unhealthyPodEvictionPolicy" not in spec
    assert "schema" in _refused("podDisruptionBudget.unhealthyPodEvictionPolicy=Never")
    assert "schema" in _refused("podDisruptionBudget.minAvailable=150%")


def _hpa(*sets: str) -> tuple[dict, dict]:
    documents = render(sets=("autoscaling.enabled=true", *sets))
    return find(documents, "HorizontalPodAutoscaler")["spec"], find(documents, "Deployment")


def test_hpa_scales_on_cpu_memory_or_both_and_owns_the_replicas():
    def targets(spec: dict) -> dict:
        return {
            m["resource"]["name"]: m["resource"]["target"]["averageUtilization"]
            for m in spec["metrics"]
        }

    spec, deployment = _hpa()
    assert targets(spec) == {"cpu": 70}
    assert "replicas" not in deployment["spec"]  # the HPA owns it
    assert "behavior" not in spec
    spec, _ = _hpa("autoscaling.targetMemoryUtilizationPercentage=80")
    assert targets(spec) == {"cpu": 70, "memory": 80}
    spec, _ = _hpa(
        "autoscaling.targetCPUUtilizationPercentage=null",
        "autoscaling.targetMemoryUtilizationPercentage=80",
    )
    assert targets(spec) == {"memory": 80}
    no_target = _refused(
        "autoscaling.enabled=true", "autoscaling.targetCPUUtilizationPercentage=null"
    )
    assert "needs targetCPUUtilizationPercentage or targetMemoryUtilizationPercentage" in no_target
    assert "must not exceed" in _refused("autoscaling.enabled=true", "autoscaling.minReplicas=11")
    assert find(render(), "Deployment")["spec"]["replicas"] == 2  # no HPA: replicaCount


def test_hpa_behavior_is_passed_through_and_validated():
    spec = find(render(*VALUES_FILES["prod"]), "HorizontalPodAutoscaler")["spec"]
    assert spec["behavior"]["scaleDown"] == {
        "stabilizationWindowSeconds": 300,
        "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
    }
    assert "schema" in _refused("autoscaling.behavior.scaleDown.stabilizationWindow=600")
    assert "schema" in _refused("autoscaling.behavior.scaleDown.selectPolicy=Fastest")


# --- pod labels and spreading ------------------------------------------------------------------
def test_a_chart_version_bump_alone_does_not_restart_pods(tmp_path):
    bumped = tmp_path / "quartstack"
    shutil.copytree(CHART, bumped)
    chart_yaml = bumped / "Chart.yaml"
    text = chart_yaml.read_text()
    bumped_text = re.sub(r"^version: .*$", "version: 99.0.0", text, count=1, flags=re.M)
    assert bumped_text != text
    chart_yaml.write_text(bumped_text)

    def pod_template(chart: Path) -> dict:
        output = helm("template", "q", str(chart), "-f", str(VALUES_FILES["prod"][0])).stdout
        documents = [d for d in yaml.safe_load_all(output) if d]
        return find(documents, "Deployment")["spec"]["template"]

    before, after = pod_template(CHART), pod_template(bumped)
    assert before == after
    labels = before["metadata"]["labels"]
    assert "helm.sh/chart" not in labels and "app.kubernetes.io/version" not in labels
    # the objects themselves still say which chart made them
    assert "helm.sh/chart" in find(render(), "Deployment")["metadata"]["labels"]


def test_spread_constraints_select_this_release_by_name_and_instance():
    documents = render(*VALUES_FILES["prod"])
    deployment = find(documents, "Deployment")["spec"]
    selector = deployment["selector"]["matchLabels"]
    assert set(selector) == {"app.kubernetes.io/name", "app.kubernetes.io/instance"}
    constraints = deployment["template"]["spec"]["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in constraints} == {
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    }
    for constraint in constraints:
        assert constraint["labelSelector"] == {"matchLabels": selector}
        assert constraint["matchLabelKeys"] == ["pod-template-hash"]  # per revision
    old = find(render(*VALUES_FILES["prod"], kube_version="1.26.0"), "Deployment")
    for constraint in old["spec"]["template"]["spec"]["topologySpreadConstraints"]:
        assert "matchLabelKeys" not in constraint  # alpha before 1.27
    # a constraint that brings its own selector keeps it
    own = render(
        sets=(
            "topologySpreadConstraints[0].maxSkew=1",
            "topologySpreadConstraints[0].topologyKey=kubernetes.io/hostname",
            "topologySpreadConstraints[0].whenUnsatisfiable=DoNotSchedule",
            "topologySpreadConstraints[0].labelSelector.matchLabels.tier=api",
        )
    )
    constraint = find(own, "Deployment")["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert constraint[0]["labelSelector"] == {"matchLabels": {"tier": "api"}}
    assert "matchLabelKeys" not in constraint[0]


# --- monitoring ----------------------------------------------------------------------------------
def test_service_monitor_takes_scrape_security_and_relabelings():
    documents = render(*VALUES_FILES["monitoring"], apis=False)  # no cluster: still rendered
    monitor = find(documents, "ServiceMonitor")
    assert monitor["metadata"]["namespace"] == "monitoring"
    # it lives in monitoring, the Service in the release namespace
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["scheme"] == "https"
    assert endpoint["tlsConfig"]["serverName"] == "quartstack.quartstack.svc"
    assert endpoint["authorization"]["credentials"] == {"name": "metrics-token", "key": "token"}
    assert endpoint["relabelings"][0]["targetLabel"] == "node"
    assert endpoint["metricRelabelings"][0]["action"] == "drop"
    _crd_validator("ServiceMonitor").validate(monitor)
    explicit = render(
        sets=("serviceMonitor.enabled=true", "serviceMonitor.namespaceSelector.any=true")
    )
    assert find(explicit, "ServiceMonitor")["spec"]["namespaceSelector"] == {"any": True}
    plain = find(render(sets=("serviceMonitor.enabled=true",)), "ServiceMonitor")
    assert "namespace" not in plain["metadata"] and "namespaceSelector" not in plain["spec"]
    assert set(plain["spec"]["endpoints"][0]) == {"port", "path", "interval", "scrapeTimeout"}


@pytest.mark.parametrize(
    "bad",
    [
        "serviceMonitor.scheme=ftp",
        "serviceMonitor.tlsConfig.insecureSkipVerfy=true",
        "serviceMonitor.basicAuth.user.name=x",
        "serviceMonitor.relabelings[0].target_label=x",
        "serviceMonitor.namespaceSelector.matchName[0]=x",
        "serviceMonitor.checkCapability=maybe",
        "grafanaDashboard.sidecarLabel=",
    ],
)
def test_schema_rejects_bad_monitoring_values(bad):
    assert "values don't meet the specifications of the schema" in _refused(bad)


def test_dashboard_carries_the_sidecar_label_users_configure():
    documents = render(*VALUES_FILES["monitoring"])
    dashboard = find(documents, "ConfigMap", "-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard_quartstack"] == "yes"
    assert "grafana_dashboard" not in dashboard["metadata"]["labels"]  # the default is replaced
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "Payments"}
    assert dashboard["metadata"]["namespace"] == "monitoring"
    default = find(render(sets=("grafanaDashboard.enabled=true",)), "ConfigMap", "-dashboard")
    assert default["metadata"]["labels"]["grafana_dashboard"] == "1"  # kube-prometheus-stack's
    assert "annotations" not in default["metadata"] and "namespace" not in default["metadata"]


# --- production values and the Ingress ----------------------------------------------------------
def _served(paths: list[dict], path: str) -> bool:
    """Kubernetes Ingress matching: Exact is the whole path, Prefix whole path elements."""
    for rule in paths:
        if rule["pathType"] == "Exact" and path == rule["path"]:
            return True
        if rule["pathType"] == "Prefix":
            prefix = rule["path"].rstrip("/")
            if path == prefix or path.startswith(prefix + "/") or prefix == "":
                return True
    return False


def test_default_ingress_publishes_the_api_only():
    ingress = find(render(sets=("ingress.enabled=true",)), "Ingress")
    paths = ingress["spec"]["rules"][0]["http"]["paths"]
    for public in ("/", "/examples/vault/secret/postgres", "/examples/cache/k"):
        assert _served(paths, public), public
    hidden = ("/metrics", "/docs", "/redoc", "/scalar", "/openapi.json", "/health/all")
    for private in (*hidden, "/redis/cluster/nodes", "/redis/cache/responses"):
        assert not _served(paths, private), private
    assert _served([{"path": "/", "pathType": "Prefix"}], "/metrics")  # what it used to do


def test_production_values_are_safe_defaults():
    documents = render(*VALUES_FILES["prod"])
    config = find(documents, "ConfigMap", "quartstack")["data"]
    assert config["VAULT_ADDR"].startswith("https://")
    pod = _pod(documents)
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    ca_dir, ca_file = config["VAULT_CACERT"].rsplit("/", 1)
    volume = next(v for v in pod["volumes"] if v["name"] == mounts[ca_dir])
    assert {"key": ca_file, "path": ca_file} in volume["secret"]["items"]
    assert config["REQUIRED_BACKENDS"] == "vault"
    proxies = [ipaddress.ip_network(n) for n in config["TRUSTED_PROXIES"].split(",")]
    # a few ingress controller addresses, not the pod CIDR
    assert all(network.num_addresses <= 256 for network in proxies), proxies
    policy = find(documents, "NetworkPolicy")["spec"]
    callers = [peer["namespaceSelector"]["matchLabels"] for peer in policy["ingress"][0]["from"]
               if "namespaceSelector" in peer]  # fmt: skip
    assert {"kubernetes.io/metadata.name": "ingress-nginx"} in callers
    assert {"kubernetes.io/metadata.name": "monitoring"} in callers


def test_helm_test_pod_pulls_the_image_like_the_app():
    documents = render(sets=("imagePullSecrets[0].name=registry", "image.digest=" + DIGEST))
    app, test = _pod(documents), find(documents, "Pod")["spec"]
    assert test["imagePullSecrets"] == app["imagePullSecrets"] == [{"name": "registry"}]
    assert test["containers"][0]["image"] == app["containers"][0]["image"]


@pytest.mark.parametrize(("seconds", "renders"), [(7, True), (8, False)])
def test_a_lifecycle_override_sleep_counts_in_the_shutdown_budget(seconds, renders):
    """7 + 1 drain + 20 grace + 5 close + 2 margin = 35 = terminationGracePeriodSeconds."""
    result = helm(
        "template", "q", str(CHART), "--set", f"lifecycle.preStop.sleep.seconds={seconds}",
        check=False,
    )  # fmt: skip
    assert (result.returncode == 0) is renders, result.stderr
    if not renders:
        assert "lifecycle.preStop.sleep.seconds" in result.stderr


def test_production_values_require_auth_and_scrape_with_the_metrics_token():
    documents = render(*VALUES_FILES["prod"])
    config = find(documents, "ConfigMap", "quartstack")["data"]
    assert config["AUTH_MODE"] == "required"
    assert {"AUTH_JWT_ISSUER", "AUTH_JWT_AUDIENCE", "AUTH_JWKS_URL"} <= set(config)
    container = _pod(documents)["containers"][0]
    [token] = [e for e in container["env"] if e["name"] == "METRICS_TOKEN"]
    reference = token["valueFrom"]["secretKeyRef"]
    endpoint = find(documents, "ServiceMonitor")["spec"]["endpoints"][0]
    assert endpoint["authorization"] == {"type": "Bearer", "credentials": reference}


def test_the_worker_requires_and_is_scraped_with_the_same_metrics_token():
    sets = (
        "worker.enabled=true",
        "serviceMonitor.enabled=true",
        "metricsToken.existingSecret=scrape-token",
    )
    documents = render(sets=sets)
    reference = {"name": "scrape-token", "key": "token"}
    for suffix in ("quartstack", "quartstack-worker"):
        container = find(documents, "Deployment", suffix)["spec"]["template"]["spec"]
        [token] = [e for e in container["containers"][0]["env"] if e["name"] == "METRICS_TOKEN"]
        assert token["valueFrom"]["secretKeyRef"] == reference
        monitor = find(documents, "ServiceMonitor", suffix)
        assert monitor["spec"]["endpoints"][0]["authorization"] == {
            "type": "Bearer",
            "credentials": reference,
        }
        _crd_validator("ServiceMonitor").validate(monitor)


def test_metrics_token_is_off_by_default_and_an_explicit_authorization_wins():
    documents = render()
    config = find(documents, "ConfigMap", "quartstack")["data"]
    assert config["AUTH_MODE"] == "none"
    env = _pod(documents)["containers"][0].get("env", [])
    assert "METRICS_TOKEN" not in {e["name"] for e in env}
    sets = (
        "serviceMonitor.enabled=true",
        "metricsToken.existingSecret=scrape-token",
        "serviceMonitor.authorization.credentials.name=other",
        "serviceMonitor.authorization.credentials.key=k",
    )
    endpoint = find(render(sets=sets), "ServiceMonitor")["spec"]["endpoints"][0]
    assert endpoint["authorization"] == {"credentials": {"name": "other", "key": "k"}}
