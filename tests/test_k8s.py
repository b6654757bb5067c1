"""The Kubernetes manifests parse, and the flow they carry is a valid flow definition."""

from pathlib import Path

import yaml

from sentinel.config import load_config_dict

ROOT = Path(__file__).resolve().parents[1]


def test_manifests_parse_and_carry_a_valid_flow():
    docs = list(yaml.safe_load_all((ROOT / "k8s" / "sentinel.yaml").read_text()))
    kinds = {d["kind"]: d for d in docs}
    assert {"ConfigMap", "Service", "StatefulSet"} <= set(kinds)
    flow = yaml.safe_load(kinds["ConfigMap"]["data"]["flow.yaml"])
    cfg = load_config_dict(flow, "k8s ConfigMap")
    assert cfg.source.kind == "kafka" and cfg.metrics.host == "0.0.0.0"
    sts = kinds["StatefulSet"]["spec"]
    assert sts["serviceName"] == kinds["Service"]["metadata"]["name"]
    env = {e["name"]: e["value"] for e in sts["template"]["spec"]["containers"][0]["env"]}
    assert env["SENTINEL_FLOW"] == "/etc/sentinel/flow.yaml"
    assert int(env["REPLICAS"]) == sts["replicas"]
    # Every spool (rabbitmq, kafka) lands on the pod's persistent volume, not in the container.
    claims = {t["metadata"]["name"] for t in sts["volumeClaimTemplates"]}
    mounts = [m["mountPath"] for m in sts["template"]["spec"]["containers"][0]["volumeMounts"] if m["name"] in claims]
    spooled = [s for s in cfg.sinks if s.kind in ("rabbitmq", "kafka")]
    assert {s.kind for s in spooled} == {"rabbitmq", "kafka"}
    for s in spooled:
        assert any(s.spool_base() == m or s.spool_base().startswith(m.rstrip("/") + "/") for m in mounts), s


def test_the_readme_flow_definition_is_valid():
    text = (ROOT / "README.md").read_text()
    start = text.index("```yaml\nname: production")
    block = text[start + len("```yaml\n"):text.index("```", start + 8)]
    cfg = load_config_dict(yaml.safe_load(block), "README")
    assert cfg.source.kind == "kafka" and len(cfg.sinks) == 5
