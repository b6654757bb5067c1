"""k8s/: the kustomize base and its overlays render, validate against the Kubernetes schemas, and carry a
valid flow, its credentials in a Secret, recovery per pod, the probes, the monitoring objects."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sentinel.config import load_config_dict

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
OVERLAYS = ("dev", "prod")
KUBECTL = str(Path(sys.executable).parent / "kubectl")


def render(overlay: str) -> list:
    out = subprocess.run([KUBECTL, "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request):
    return request.param, render(request.param)


def by_kind(docs):
    out = {}
    for d in docs:
        out.setdefault(d["kind"], []).append(d)
    return out


def the(docs, kind):
    (d,) = by_kind(docs)[kind]
    return d


def test_rendered_manifests_validate_against_the_kubernetes_schemas(rendered, tmp_path):
    overlay, docs = rendered
    builtin = [d for d in docs if not d["apiVersion"].startswith("monitoring.coreos.com/")]
    f = tmp_path / f"{overlay}.yaml"
    f.write_text(yaml.safe_dump_all(builtin))
    out = subprocess.run([str(Path(sys.executable).parent / "kubernetes-validate"), "--strict", "--quiet", str(f)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert {"Namespace", "ServiceAccount", "ConfigMap", "Service", "StatefulSet", "PodDisruptionBudget"} <= \
        {d["kind"] for d in builtin}


def test_prometheus_operator_objects_are_well_formed(rendered):
    _, docs = rendered
    pm = the(docs, "PodMonitor")
    sts = the(docs, "StatefulSet")
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    assert pm["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pod_labels[pm["spec"]["jobLabel"]] == "sentinel"  # the job the rules and dashboards select
    ports = {p["name"] for p in sts["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert all(e["port"] in ports and e["path"] == "/metrics" for e in pm["spec"]["podMetricsEndpoints"])
    rule = the(docs, "PrometheusRule")
    committed = yaml.safe_load((K8S / "base" / "rules" / "sentinel.rules.yaml").read_text())
    assert rule["spec"]["groups"] == committed["groups"]
    for g in rule["spec"]["groups"]:
        for r in g["rules"]:
            assert set(r) <= {"alert", "expr", "for", "labels", "annotations"} and r["alert"] and r["expr"]


def test_the_flow_is_valid_and_its_credentials_come_from_a_secret(rendered):
    overlay, docs = rendered
    sts = the(docs, "StatefulSet")
    flow_cm = [d for d in by_kind(docs)["ConfigMap"] if d["metadata"]["name"].startswith("sentinel-flow-")]
    assert len(flow_cm) == 1, "the flow's ConfigMap carries a content hash in its name"
    text = flow_cm[0]["data"]["flow.yaml"]
    assert "guest" not in text and "password" not in text.lower()
    assert "${SENTINEL_RABBITMQ_URL}" in text
    # The container fills the placeholders from its environment, which takes the Secret.
    c = sts["spec"]["template"]["spec"]["containers"][0]
    (secret_ref,) = [e["secretRef"]["name"] for e in c["envFrom"] if "secretRef" in e]
    assert secret_ref.startswith("sentinel-credentials")
    env = dict(os.environ, SENTINEL_RABBITMQ_URL="amqp://u:p@rabbitmq:5672/%2F")
    code = re.search(r"python -c '([^']*)'", c["args"][0]).group(1)
    filled = subprocess.run([sys.executable, "-c", code], input=text, capture_output=True, text=True, env=env)
    assert filled.returncode == 0, filled.stderr
    cfg = load_config_dict(yaml.safe_load(filled.stdout), "k8s flow")
    assert cfg.source.kind == "kafka" and cfg.metrics.host == "0.0.0.0" and cfg.metrics.port == 9464
    assert [s.url for s in cfg.sinks if s.kind == "rabbitmq"] == ["amqp://u:p@rabbitmq:5672/%2F"]
    # The volumes refer to the hashed ConfigMap, so a changed flow changes the pod template and rolls the pods.
    vols = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    assert vols["flow"]["configMap"]["name"] == flow_cm[0]["metadata"]["name"]
    # Every spool lands on the pod's persistent volume.
    claims = {t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]}
    mounts = [m["mountPath"] for m in c["volumeMounts"] if m["name"] in claims]
    spooled = [s for s in cfg.sinks if s.kind in ("rabbitmq", "kafka")]
    assert {s.kind for s in spooled} == {"rabbitmq", "kafka"}
    for s in spooled:
        assert any(s.spool_base().startswith(m.rstrip("/") + "/") for m in mounts), s
    if overlay == "dev":
        assert the(docs, "Secret")["metadata"]["name"] == secret_ref
    else:
        assert "Secret" not in by_kind(docs), "production's Secret is not in the repository"


def test_the_changed_flow_changes_the_configmaps_name(tmp_path):
    """The configMapGenerator hash: another flow definition gives another name, so the pods roll."""
    import shutil

    shutil.copytree(K8S, tmp_path / "k8s")
    before = [d for d in render_dir(tmp_path / "k8s" / "overlays" / "prod") if d["kind"] == "StatefulSet"][0]
    flow = tmp_path / "k8s" / "base" / "flow.yaml"
    flow.write_text(flow.read_text().replace("metrics: {port: 9464", "windows: {size: 5m}\nmetrics: {port: 9464"))
    after = [d for d in render_dir(tmp_path / "k8s" / "overlays" / "prod") if d["kind"] == "StatefulSet"][0]
    name = lambda s: [v for v in s["spec"]["template"]["spec"]["volumes"] if v["name"] == "flow"][0]["configMap"]
    assert name(before) != name(after)


def render_dir(path: Path) -> list:
    out = subprocess.run([KUBECTL, "kustomize", str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def test_statefulset_runs_a_bytewax_cluster_with_recovery(rendered):
    overlay, docs = rendered
    sts = the(docs, "StatefulSet")
    spec = sts["spec"]
    pod = spec["template"]["spec"]
    c = pod["containers"][0]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert int(env["SENTINEL_REPLICAS"]) == spec["replicas"] == {"dev": 1, "prod": 3}[overlay]
    init = pod["initContainers"][0]
    init_env = {e["name"]: e["value"] for e in init["env"]}
    assert init_env["SENTINEL_REPLICAS"] == env["SENTINEL_REPLICAS"]
    assert init_env["SENTINEL_RECOVERY_GENERATION"] == env["SENTINEL_RECOVERY_GENERATION"]
    script = c["args"][0]
    assert '-i "${HOSTNAME##*-}"' in script and "-r " in script and "sentinel run" in script
    assert "python -m bytewax.recovery" in init["args"][0]
    assert spec["serviceName"] == the(docs, "Service")["metadata"]["name"]
    assert the(docs, "Service")["spec"]["clusterIP"] == "None"
    assert the(docs, "Service")["spec"]["publishNotReadyAddresses"] is True
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    # Non-root, read-only, no privileges.
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    for cont in (c, init):
        sc = cont["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
    pdb = the(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()


def test_init_container_lays_out_one_partition_per_pod(tmp_path):
    """The init script, run as written for pod 1 of 3: partition 1 of 3 only, and left alone the next time."""
    docs = render("prod")
    init = the(docs, "StatefulSet")["spec"]["template"]["spec"]["initContainers"][0]
    script = init["args"][0].replace("/var/lib/sentinel", str(tmp_path))
    env = dict(os.environ, HOSTNAME="sentinel-1", SENTINEL_REPLICAS="3", SENTINEL_RECOVERY_GENERATION="g1",
               PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    for expect in ("created", "present"):
        out = subprocess.run(["/bin/sh", "-ec", script], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert expect in out.stdout
        assert sorted(p.name for p in (tmp_path / "recovery" / "g1").iterdir()) == ["part-1.sqlite3"]
    from sentinel.runtime import check_recovery_directory

    assert check_recovery_directory(str(tmp_path / "recovery" / "g1")) is None


def test_dashboards_configmap_is_for_the_grafana_sidecar(rendered):
    _, docs = rendered
    cm = [d for d in by_kind(docs)["ConfigMap"] if d["metadata"]["name"] == "sentinel-dashboards"][0]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert set(cm["data"]) == {"sentinel-overview.json", "sentinel-service.json"}
    for name, text in cm["data"].items():
        assert text == (K8S / "base" / "dashboards" / name).read_text()


def test_dockerfile_is_multi_stage_non_root_and_pinned():
    text = (ROOT / "Dockerfile").read_text()
    froms = [line.split()[1] for line in text.splitlines() if line.startswith("FROM ")]
    assert len(froms) >= 2
    args = dict(line[4:].split("=", 1) for line in text.splitlines() if line.startswith("ARG ") and "=" in line)
    for f in froms:
        image = args.get(f.strip("${}"), f)
        assert ":" in image and image.split(":")[1][0].isdigit(), f"base image not pinned by version: {image}"
    users = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ".venv" in ignore and ".git" in ignore


def test_the_images_build_stage_builds_the_package(tmp_path):
    """No container engine here: the build stage's COPY instructions are replayed, with .dockerignore applied,
    into a directory, and the package is built from it as the image's ``pip install .`` would."""
    import dockerfile
    import fnmatch
    import shutil
    import tomllib
    import zipfile

    ignore = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines() if p.strip()[:1] not in ("", "#")]
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    stage = None
    for c in dockerfile.parse_file(str(ROOT / "Dockerfile")):
        if c.cmd == "FROM":
            stage = c.value[-1]
        elif c.cmd == "COPY" and stage == "build" and not any(f.startswith("--from") for f in c.flags):
            *srcs, _dest = c.value
            for src in srcs:
                assert not any(fnmatch.fnmatch(src, pat) for pat in ignore), f"{src} is in .dockerignore"
                path = ROOT / src
                assert path.exists(), src
                if path.is_dir():
                    shutil.copytree(path, ctx / src, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
                else:
                    shutil.copy(path, ctx / src)
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"),
                          str(ctx)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    top = {n.split("/")[0] for n in zipfile.ZipFile(wheel).namelist()}
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    assert set(packages) <= top


def test_the_readme_flow_definition_is_valid():
    text = (ROOT / "README.md").read_text()
    start = text.index("```yaml\nname: production")
    block = text[start + len("```yaml\n"):text.index("```", start + 8)]
    cfg = load_config_dict(yaml.safe_load(block), "README")
    assert cfg.source.kind == "kafka" and len(cfg.sinks) == 5
