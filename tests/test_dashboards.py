"""The dashboards and rules built by sentinel/dashboards.py: the committed files are current, the dashboards
have what an operator needs, the rules pass promtool's checks and unit tests."""

import json
import re
import shutil
import subprocess
from pathlib import Path

from sentinel import dashboards, metrics

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "k8s" / "base"


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is not installed (apt-get install -y prometheus; .ci/run does it)"
    return path


def test_committed_files_are_current(capsys):
    assert dashboards.main(["--check", "--out", str(BASE)]) == 0, capsys.readouterr().err


def test_check_names_a_stale_file(tmp_path, capsys):
    assert dashboards.main(["--out", str(tmp_path)]) == 0
    f = tmp_path / "dashboards" / "sentinel-overview.json"
    f.write_text(f.read_text().replace("Events/s", "Events per second"))
    assert dashboards.main(["--check", "--out", str(tmp_path)]) == 1
    assert "sentinel-overview.json" in capsys.readouterr().err
    assert dashboards.main(["--out", str(tmp_path)]) == 0
    assert dashboards.main(["--check", "--out", str(tmp_path)]) == 0


def test_overview_has_the_operators_panels():
    d = json.loads((BASE / "dashboards" / "sentinel-overview.json").read_text())
    exprs = " ".join(t["expr"] for p in d["panels"] for t in p.get("targets", []))
    for needed in ("sentinel_events_total", 'outcome="dead_letter"', "sentinel_event_lag_seconds_bucket",
                   "sentinel_kafka_consumer_lag", "sentinel_watermark_delay_seconds",
                   "sum by (type) (rate(sentinel_anomalies_total", "sum by (severity) (rate(sentinel_anomalies_total",
                   "topk(10, sum by (service)", "sentinel_incidents_open", "sentinel_detection_latency_seconds_bucket",
                   "sentinel_spool_pending", "sentinel_sink_errors_total", "sentinel_step_errors_total"):
        assert needed in exprs, needed
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    assert {a["name"] for a in d["annotations"]["list"]} == {"Sentinel alerts", "Sentinel health"}


def test_drill_down_has_service_and_model_variables_and_alert_annotations():
    d = json.loads((BASE / "dashboards" / "sentinel-service.json").read_text())
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["service"]["query"].startswith("label_values(sentinel_anomalies_total")
    assert variables["service"]["multi"] and variables["service"]["includeAll"]
    # The models of the services chosen.
    assert variables["model"]["query"] == 'label_values(sentinel_anomalies_total{job=~"$job",service=~"$service"}, model)'
    assert variables["model"]["multi"] and variables["model"]["includeAll"] and variables["model"]["allValue"] == ".*"
    names = [v["name"] for v in d["templating"]["list"]]
    assert names.index("service") < names.index("model")
    for p in d["panels"]:
        for t in p.get("targets", []):
            assert 'service=~"$service"' in t["expr"] or "Share" in p["title"], (p["title"], t["expr"])
            # Every selection of the alerts counter but the share's "all alerts" filters on the model too.
            sels = re.findall(r"sentinel_anomalies_total\{([^}]*)\}", t["expr"])
            if "Share" in p["title"]:
                sels = sels[:1]
            assert all('model=~"$model"' in sel for sel in sels), (p["title"], t["expr"])
    alerts = [a for a in d["annotations"]["list"] if a["name"] == "Sentinel alerts"][0]
    assert "$service" in alerts["expr"] and "$model" in alerts["expr"] and alerts["titleFormat"]
    # The overview has no model variable, so nothing of it names one.
    overview = (BASE / "dashboards" / "sentinel-overview.json").read_text()
    assert "$model" not in overview


def test_every_metric_queried_exists():
    """Each sentinel_* name in a panel or rule is one that sentinel/metrics.py defines."""
    known = set()
    for fam in metrics.Metrics().registry.collect():
        if fam.type == "counter":
            known.add(fam.name + "_total")
        elif fam.type == "histogram":
            known.update(fam.name + suffix for suffix in ("_bucket", "_sum", "_count"))
        else:
            known.add(fam.name)
    texts = [f.read_text() for f in (BASE / "dashboards").glob("*.json")]
    texts.append((BASE / "rules" / "sentinel.rules.yaml").read_text())
    used = set(re.findall(r"\bsentinel_[a-z_]+", " ".join(texts)))
    assert used - known == set()
    assert len(used) >= 15


def test_promtool_checks_the_rules():
    for f in (BASE / "rules" / "sentinel.rules.yaml", BASE / "prometheusrule.yaml"):
        if f.name == "prometheusrule.yaml":
            import yaml

            doc = yaml.safe_load(f.read_text())
            assert doc["kind"] == "PrometheusRule"
            plain = f.parent / "rules" / "sentinel.rules.yaml"
            assert doc["spec"]["groups"] == yaml.safe_load(plain.read_text())["groups"]
            continue
        out = subprocess.run([promtool(), "check", "rules", str(f)], capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "SUCCESS: 11 rules found" in out.stdout


def test_rule_unit_tests_pass():
    out = subprocess.run([promtool(), "test", "rules", str(BASE / "rules" / "sentinel.rules.test.yaml")],
                         capture_output=True, text=True, cwd=BASE / "rules")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_sentinel_dashboards_subcommand(tmp_path):
    import sys

    sentinel = str(Path(sys.executable).parent / "sentinel")
    ok = subprocess.run([sentinel, "dashboards", "--check"], capture_output=True, text=True, cwd=ROOT)
    assert ok.returncode == 0, ok.stderr
    stale = subprocess.run([sentinel, "dashboards", "--check", "--out", str(tmp_path)], capture_output=True, text=True)
    assert stale.returncode == 1 and "sentinel-overview.json" in stale.stderr
    assert subprocess.run([sentinel, "dashboards", "--out", str(tmp_path)]).returncode == 0
    assert (tmp_path / "prometheusrule.yaml").read_text() == (BASE / "prometheusrule.yaml").read_text()
