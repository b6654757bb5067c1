"""k8s/: the kustomize base and its overlays render, validate against the Kubernetes schemas, and carry a
valid flow, its credentials in a Secret, recovery per pod, the probes, the monitoring objects."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

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
    cfg = load_config_dict(yaml.safe_load(text), "k8s flow")
    assert cfg.source.kind == "kafka" and cfg.metrics.host == "0.0.0.0" and cfg.metrics.port == 9464
    # The RabbitMQ password is named, not written; the container's environment takes it from the Secret.
    (rabbit,) = [s for s in cfg.sinks if s.kind == "rabbitmq"]
    assert rabbit.password == {"env": "SENTINEL_RABBITMQ_PASSWORD"}
    assert urlsplit(rabbit.url).password is None
    c = sts["spec"]["template"]["spec"]["containers"][0]
    assert [e["secretRef"]["name"] for e in c["envFrom"] if "secretRef" in e] == ["sentinel-credentials"]
    assert "/etc/sentinel/flow.yaml" in c["args"][0]
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
    assert "Secret" not in by_kind(docs), "no credential is kept in the repository, not even a development one"
    env_names = [e["name"] for e in c["env"]]
    assert not [n for n in env_names if re.search("PASSWORD|URL|TOKEN|SECRET", n)], env_names
    assert {"SENTINEL_LOG_LEVEL": "DEBUG" if overlay == "dev" else "INFO"}.items() <= \
        {e["name"]: e["value"] for e in c["env"]}.items()


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


def _executions(part: Path):
    import sqlite3

    try:
        with sqlite3.connect(f"file:{part}?mode=ro", uri=True, timeout=5) as db:
            return db.execute("SELECT ex_num, resume_epoch FROM exs ORDER BY ex_num").fetchall(), \
                db.execute("SELECT count(*) FROM snaps").fetchone()[0]
    except sqlite3.Error:
        return [], 0


def test_a_two_pod_cluster_stops_together_and_resumes_from_the_pods_partitions(tmp_path):
    """The pods' layout, on loopback: two processes, each with the partition the init script gives its ordinal.
    One dies, the other exits too; started again, both resume from the last snapshot."""
    from devtools.tansu import free_port

    docs = render("prod")
    sts = the(docs, "StatefulSet")["spec"]["template"]["spec"]
    init = sts["initContainers"][0]["args"][0].replace("/var/lib/sentinel", str(tmp_path))
    path_env = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    for ordinal in (0, 1):
        env = dict(os.environ, HOSTNAME=f"sentinel-{ordinal}", SENTINEL_REPLICAS="2",
                   SENTINEL_RECOVERY_GENERATION="g1", PATH=path_env)
        out = subprocess.run(["/bin/sh", "-ec", init], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        # One pod's volume per process: the store directories are apart, as on two pods.
        (tmp_path / "recovery" / "g1").rename(tmp_path / f"pod{ordinal}")
    flow = tmp_path / "flow.yaml"
    flow.write_text(yaml.safe_dump({
        "name": "cluster", "source": {"kind": "simulator", "seed": 7, "hours": 24, "speed": 120},
        "sinks": [{"kind": "jsonl", "path": str(tmp_path / "alerts.jsonl")}],
        "metrics": {"port": 0}, "dead_letters": {"kind": "stderr"}}))
    addrs = f"127.0.0.1:{free_port()};127.0.0.1:{free_port()}"
    sentinel = str(Path(sys.executable).parent / "sentinel")

    def start(ordinal, tag):
        log = open(tmp_path / f"p{ordinal}-{tag}.log", "wb")
        return subprocess.Popen([sentinel, "run", "-c", str(flow), "-i", str(ordinal), "-a", addrs,
                                 "-r", str(tmp_path / f"pod{ordinal}"), "-s", "1"],
                                stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)

    def wait_snapshots(parts, at_least, timeout=90):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(_executions(p)[1] >= at_least for p in parts):
                return
            time.sleep(0.5)
        pytest.fail(f"no snapshots in {parts} after {timeout}s")

    parts = [tmp_path / "pod0" / "part-0.sqlite3", tmp_path / "pod1" / "part-1.sqlite3"]
    procs = [start(0, "a"), start(1, "a")]
    try:
        wait_snapshots(parts, 1)
        time.sleep(3)
        procs[1].kill()
        procs[1].wait(timeout=30)
        # The survivor loses its peer and ends too: a Bytewax cluster runs only with every process up.
        assert procs[0].wait(timeout=60) != 0
        procs = [start(0, "b"), start(1, "b")]
        # Bytewax writes each execution's row into one of the partitions: look at both.
        executions = lambda: sorted(e for p in parts for e in _executions(p)[0])
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not (executions() and executions()[-1][0] >= 1):
            assert all(p.poll() is None for p in procs), "a process of the restarted cluster exited"
            time.sleep(0.5)
        ex_num, resume_epoch = executions()[-1]
        assert ex_num == 1 and resume_epoch > 1, executions()  # the second execution resumed from a snapshot
        time.sleep(2)
        assert all(p.poll() is None for p in procs), "a process of the restarted cluster exited"
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


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
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    # every package (subpackages such as sentinel.core too) is in the wheel
    assert {p for p in packages if p.replace(".", "/") + "/__init__.py" not in names} == set()


def test_the_readme_flow_definition_is_valid():
    text = (ROOT / "README.md").read_text()
    start = text.index("```yaml\nname: production")
    block = text[start + len("```yaml\n"):text.index("```", start + 8)]
    cfg = load_config_dict(yaml.safe_load(block), "README")
    assert cfg.source.kind == "kafka" and len(cfg.sinks) == 5
