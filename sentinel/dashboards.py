"""Grafana dashboards and Prometheus alerting rules for Sentinel's own metrics, as code.

``python -m sentinel.dashboards --out k8s/base`` writes

- ``dashboards/sentinel-overview.json`` and ``dashboards/sentinel-service.json``
  (Grafana dashboards, built with grafana-foundation-sdk),
- ``rules/sentinel.rules.yaml`` (a Prometheus rules file, for ``rule_files``),
- ``prometheusrule.yaml`` (the same groups as a prometheus-operator PrometheusRule).

The committed files are these functions' output; ``--check`` exits 1 naming
every file that differs (tests/test_dashboards.py runs it).

Every query filters on ``job=~"$job"`` (the dashboards) or on ``JOB`` (the
rules): the scrape job's name, ``sentinel`` under the PodMonitor of k8s/base.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import yaml
from grafana_foundation_sdk.builders import bargauge, dashboard, prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    VariableOption,
    VariableRefresh,
    VariableSort,
)

JOB = 'job="sentinel"'
DS = DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "$__rate_interval"
J = 'job=~"$job"'


# --- Dashboards ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""
    instant: bool = False


@dataclass(frozen=True)
class PanelSpec:
    title: str
    kind: str  # timeseries | stat | bargauge | table
    queries: Tuple[Query, ...]
    unit: str = "short"
    description: str = ""
    w: int = 8
    h: int = 8
    # Why the panel may show nothing in a healthy flow (None: it always has data once events flow).
    may_be_empty: Optional[str] = None


@dataclass(frozen=True)
class DashboardSpec:
    uid: str
    title: str
    description: str
    rows: Tuple[Tuple[str, Tuple[PanelSpec, ...]], ...]
    service_variable: bool = False
    model_variable: bool = False  # a ``model`` variable (of the services chosen); needs service_variable
    annotations: Tuple[Tuple[str, str, str, str], ...] = field(default=())  # name, expr, title format, tag keys


def _q(expr: str, legend: str = "", instant: bool = False) -> Query:
    return Query(" ".join(expr.split()), legend, instant)


def _events_per_second() -> str:
    return f"sum(rate(sentinel_events_total{{{J}}}[{RATE}]))"


def _dead_letter_ratio(sel: str = J, rng: str = RATE, by: str = "") -> str:
    grp = f" by ({by})" if by else ""
    return (f"(sum{grp}(rate(sentinel_events_total{{{sel},outcome=\"dead_letter\"}}[{rng}])) or "
            f"sum{grp}(rate(sentinel_events_total{{{sel}}}[{rng}])) * 0) / "
            f"sum{grp}(rate(sentinel_events_total{{{sel}}}[{rng}]))")


def _quantile(q: float, metric: str, by: str = "le") -> str:
    return f"histogram_quantile({q}, sum by ({by}) (rate({metric}_bucket{{{J}}}[{RATE}])))"


NO_KAFKA = "a flow whose source is not Kafka has no consumer lag"
ONLY_ON_TROUBLE = "counts failures: nothing to show while every record, step and sink is healthy"

S = 'service=~"$service"'
SM = 'service=~"$service",model=~"$model"'  # the drill-down's selection of sentinel_anomalies_total


def _annotations(sel: str) -> Tuple[Tuple[str, str, str, str], ...]:
    """The flow's alerts (of the series ``sel`` selects) and Sentinel's own health alerts."""
    a = f"sentinel_anomalies_total{{{J},{sel}}}"
    return (
        # An alert counted this minute: a counter that rose, or one that appeared (its first alert, which
        # increase() cannot see).
        ("Sentinel alerts",
         f"sum by (service, type, severity) (increase({a}[1m]) > 0 or ({a} unless {a} offset 1m))",
         "{{type}} {{severity}} on {{service}}", "service,type,severity"),
        ("Sentinel health",
         'ALERTS{alertstate="firing", alertname=~"Sentinel.*", job=~"$job"}',
         "{{alertname}}", "alertname,severity"),
    )


ANNOTATIONS = _annotations(S)
NOT_BY_MODEL = "Incidents are counted by service: the model variable does not filter them."

OVERVIEW = DashboardSpec(
    uid="sentinel-overview",
    title="LLM-Sentinel / Overview",
    description="Sentinel's flow: input, lag, alerts and their delivery, open incidents.",
    service_variable=True,
    annotations=ANNOTATIONS,
    rows=(
        ("Now", (
            PanelSpec("Processes ready", "stat", (_q(f"sum(sentinel_ready{{{J}}})", instant=True),), w=4, h=4,
                      description="Processes whose flow reads (as /readyz)."),
            PanelSpec("Events/s", "stat", (_q(_events_per_second()),), unit="reqps", w=4, h=4),
            PanelSpec("Dead-letter ratio", "stat", (_q(_dead_letter_ratio()),), unit="percentunit", w=4, h=4),
            PanelSpec("Open incidents", "stat", (_q(f"sum(sentinel_incidents_open{{{J}}})", instant=True),),
                      w=4, h=4),
            PanelSpec("Since the last event", "stat",
                      (_q(f"time() - max(sentinel_last_event_timestamp_seconds{{{J}}})"),), unit="s", w=4, h=4),
            PanelSpec("Keys warm / warming", "stat", (
                _q(f"sum(sentinel_keys_active{{{J}}}) - sum(sentinel_keys_warming{{{J}}})", "warm", True),
                _q(f"sum(sentinel_keys_warming{{{J}}})", "warming", True)), w=4, h=4),
        )),
        ("Input", (
            PanelSpec("Events/s by outcome", "timeseries",
                      (_q(f"sum by (outcome) (rate(sentinel_events_total{{{J}}}[{RATE}]))", "{{outcome}}"),),
                      unit="reqps"),
            PanelSpec("Dead-letter ratio", "timeseries", (_q(_dead_letter_ratio(), "dead letters"),),
                      unit="percentunit"),
            PanelSpec("Dead letters by reason", "timeseries",
                      (_q(f"sum by (reason) (rate(sentinel_dead_letters_total{{{J}}}[{RATE}]))", "{{reason}}"),),
                      unit="reqps", may_be_empty="clean input has no dead letters"),
        )),
        ("Lag", (
            PanelSpec("Event-time lag", "timeseries", (
                _q(_quantile(0.5, "sentinel_event_lag_seconds"), "p50"),
                _q(_quantile(0.99, "sentinel_event_lag_seconds"), "p99")), unit="s",
                description="The stream's clock minus each key batch's newest event time."),
            PanelSpec("Window close lag and watermark delay", "timeseries", (
                _q(_quantile(0.99, "sentinel_window_close_lag_seconds"), "window close p99"),
                _q(f"max(sentinel_watermark_delay_seconds{{{J}}})", "watermark delay")), unit="s"),
            PanelSpec("Kafka consumer lag", "timeseries",
                      (_q(f"sum by (topic) (sentinel_kafka_consumer_lag{{{J}}})", "{{topic}}"),),
                      may_be_empty=NO_KAFKA),
        )),
        ("Anomalies", (
            PanelSpec("Alerts by type (per minute)", "timeseries",
                      (_q(f"sum by (type) (rate(sentinel_anomalies_total{{{J},service=~\"$service\"}}[{RATE}])) * 60",
                          "{{type}}"),)),
            PanelSpec("Alerts by severity (per minute)", "timeseries",
                      (_q(f"sum by (severity) (rate(sentinel_anomalies_total{{{J},service=~\"$service\"}}[{RATE}])) "
                          f"* 60", "{{severity}}"),)),
            PanelSpec("Top services by alerts", "bargauge",
                      (_q(f"topk(10, sum by (service) (increase(sentinel_anomalies_total{{{J}}}[$__range])))",
                          "{{service}}", True),)),
            PanelSpec("Open incidents by service", "timeseries",
                      (_q(f"sum by (service) (sentinel_incidents_open{{{J},service=~\"$service\"}})", "{{service}}"),)),
            PanelSpec("Alerts suppressed by reason", "timeseries",
                      (_q(f"sum by (reason) (rate(sentinel_alerts_suppressed_total{{{J}}}[{RATE}])) * 60",
                          "{{reason}}"),)),
        )),
        ("Delivery", (
            PanelSpec("Alert delivery latency", "timeseries", (
                _q(_quantile(0.5, "sentinel_detection_latency_seconds"), "p50"),
                _q(_quantile(0.99, "sentinel_detection_latency_seconds"), "p99")), unit="s",
                description="Wall time from ingest of the event that closed the window to the alert published."),
            PanelSpec("Alerts published by sink (per minute)", "timeseries",
                      (_q(f"sum by (sink) (rate(sentinel_alerts_published_total{{{J}}}[{RATE}])) * 60", "{{sink}}"),)),
            PanelSpec("Spool pending by sink", "timeseries",
                      (_q(f"sum by (sink) (sentinel_spool_pending{{{J}}})", "{{sink}}"),),
                      description="Alerts waiting in a RabbitMQ or Kafka sink's on-disk spool."),
            PanelSpec("Sink errors", "timeseries",
                      (_q(f"sum by (sink) (rate(sentinel_sink_errors_total{{{J}}}[{RATE}]))", "{{sink}}"),),
                      unit="reqps", may_be_empty=ONLY_ON_TROUBLE),
            PanelSpec("Step errors", "timeseries",
                      (_q(f"sum by (step) (rate(sentinel_step_errors_total{{{J}}}[{RATE}]))", "{{step}}"),),
                      unit="reqps", may_be_empty=ONLY_ON_TROUBLE),
            PanelSpec("Build", "table",
                      (_q(f"max by (version, python, bytewax) (sentinel_build_info{{{J}}})", instant=True),), w=8),
        )),
    ),
)

SERVICE = DashboardSpec(
    uid="sentinel-service",
    title="LLM-Sentinel / Service",
    description="One LLM service (or several), and its models: alerts by type and severity, open incidents, "
                "its share.",
    service_variable=True,
    model_variable=True,
    annotations=_annotations(SM),
    rows=(
        ("Service", (
            PanelSpec("Alerts in range", "stat",
                      (_q(f"sum(increase(sentinel_anomalies_total{{{J},{SM}}}[$__range]))",
                          instant=True),), w=6, h=4),
            PanelSpec("Open incidents", "stat",
                      (_q(f"sum(sentinel_incidents_open{{{J},service=~\"$service\"}})", instant=True),), w=6, h=4,
                      description=NOT_BY_MODEL),
            PanelSpec("Share of all alerts", "stat",
                      (_q(f"sum(increase(sentinel_anomalies_total{{{J},{SM}}}[$__range])) / "
                          f"sum(increase(sentinel_anomalies_total{{{J}}}[$__range]))", instant=True),),
                      unit="percentunit", w=6, h=4),
            PanelSpec("Critical and high in range", "stat",
                      (_q(f"sum(increase(sentinel_anomalies_total{{{J},{SM},"
                          f"severity=~\"critical|high\"}}[$__range])) or vector(0)", instant=True),), w=6, h=4),
        )),
        ("Alerts", (
            PanelSpec("Alerts by type (per minute)", "timeseries",
                      (_q(f"sum by (service, type) (rate(sentinel_anomalies_total{{{J},{SM}}}"
                          f"[{RATE}])) * 60", "{{service}} {{type}}"),), w=12),
            PanelSpec("Alerts by severity (per minute)", "timeseries",
                      (_q(f"sum by (service, severity) (rate(sentinel_anomalies_total{{{J},{SM}}}"
                          f"[{RATE}])) * 60", "{{service}} {{severity}}"),), w=12),
            PanelSpec("Open incidents", "timeseries",
                      (_q(f"sum by (service) (sentinel_incidents_open{{{J},service=~\"$service\"}})",
                          "{{service}}"),), w=12, description=NOT_BY_MODEL),
            PanelSpec("Alerts in range by model, type and severity", "table",
                      (_q(f"sum by (service, model, type, severity) (increase(sentinel_anomalies_total{{{J},"
                          f"{SM}}}[$__range]))", instant=True),), w=12),
        )),
    ),
)

DASHBOARDS = (OVERVIEW, SERVICE)


def _panel_builder(spec: PanelSpec):
    kind = {"timeseries": timeseries.Panel, "stat": stat.Panel, "bargauge": bargauge.Panel,
            "table": table.Panel}[spec.kind]
    p = kind().title(spec.title).datasource(DS).unit(spec.unit).span(spec.w).height(spec.h)
    if spec.description:
        p = p.description(spec.description)
    for i, q in enumerate(spec.queries):
        t = prometheus.Dataquery().expr(q.expr).ref_id(chr(ord("A") + i))
        if q.legend:
            t = t.legend_format(q.legend)
        t = t.instant() if q.instant else t.range()
        p = p.with_target(t)
    return p


def build_dashboard(spec: DashboardSpec) -> dict:
    """The dashboard as Grafana's JSON model (a dict)."""
    b = (dashboard.Dashboard(spec.title).uid(spec.uid).description(spec.description)
         .tags(["sentinel", "llm"]).refresh("30s").time("now-3h", "now").timezone("utc")
         .tooltip(DashboardCursorSync.CROSSHAIR).editable())
    b = b.with_variable(dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus"))
    b = b.with_variable(
        dashboard.QueryVariable("job").label("Job").datasource(DS)
        .query("label_values(sentinel_build_info, job)").refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .multi(True).include_all(True).current(VariableOption(selected=True, text="All", value="$__all")))
    if spec.service_variable:
        b = b.with_variable(
            dashboard.QueryVariable("service").label("Service").datasource(DS)
            .query('label_values(sentinel_anomalies_total{job=~"$job"}, service)')
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).sort(VariableSort.ALPHABETICAL_ASC)
            .multi(True).include_all(True).current(VariableOption(selected=True, text="All", value="$__all")))
    if spec.model_variable:
        b = b.with_variable(
            dashboard.QueryVariable("model").label("Model").datasource(DS)
            .query('label_values(sentinel_anomalies_total{job=~"$job",service=~"$service"}, model)')
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).sort(VariableSort.ALPHABETICAL_ASC)
            .multi(True).include_all(True).current(VariableOption(selected=True, text="All", value="$__all")))
    for name, expr, _title, _tags in spec.annotations:
        b = b.annotation(dashboard.AnnotationQuery().name(name).datasource(DS).enable(True)
                         .icon_color("red" if "health" in name else "orange").expr(expr))
    for row, panels in spec.rows:
        b = b.with_row(dashboard.Row(row))
        for p in panels:
            b = b.with_panel(_panel_builder(p))
    out = json.loads(JSONEncoder(sort_keys=True, indent=2).encode(b.build()))
    # The SDK's annotation model has no Prometheus fields for an event's title and tags: set them here.
    fmt = {name: (title, tags) for name, _e, title, tags in spec.annotations}
    for a in out.get("annotations", {}).get("list", []):
        if a.get("name") in fmt:
            a["titleFormat"], a["tagKeys"] = fmt[a["name"]]
            a["useValueForTime"] = False
            a["step"] = "60s"
    # Grafana wants a unique id per panel; an unset options block is left out.
    for i, p in enumerate(out.get("panels", []), start=1):
        p["id"] = i
        if p.get("options") is None:
            p.pop("options", None)
    # The variables "All" must be a regex that matches every value.
    for v in out.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            v["allValue"] = ".*"
    return out


def iter_panels(spec: DashboardSpec) -> Iterator[PanelSpec]:
    for _row, panels in spec.rows:
        yield from panels


# --- Alerting rules -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    alert: str
    expr: str
    for_: str
    severity: str
    summary: str
    description: str


def _rules(job: str = JOB) -> List[Rule]:
    j = job
    return [
        Rule("SentinelDown", f"up{{{j}}} == 0", "5m", "critical",
             "Sentinel process {{ $labels.instance }} is not scraped",
             "Prometheus has not scraped {{ $labels.instance }} for 5 minutes: the process is down or its metrics "
             "port does not answer. A Bytewax cluster with a process missing does not process anything."),
        Rule("SentinelNotReady", f"max by (job, instance) (sentinel_ready{{{j}}}) == 0", "10m", "critical",
             "Sentinel process {{ $labels.instance }} has not been ready for 10 minutes",
             "/readyz has been false for 10 minutes: the cluster did not form, the source is not assigned or "
             "reading, or a sink is not connected."),
        Rule("SentinelNoEvents",
             f"time() - max by (job, instance) (sentinel_last_event_timestamp_seconds{{{j}}}) > 600", "5m", "warning",
             "Sentinel {{ $labels.instance }} has read no event for over 10 minutes",
             "No telemetry has come in for {{ $value | humanizeDuration }}: the producers, the topics or the "
             "source are at fault. Detection on the services is blind meanwhile."),
        Rule("SentinelEventLagHigh",
             f"histogram_quantile(0.99, sum by (job, instance, le) (rate(sentinel_event_lag_seconds_bucket{{{j}}}[5m]))) "
             f"> 300", "10m", "warning",
             "Sentinel {{ $labels.instance }} processes events over 5 minutes after they happened",
             "p99 event-time lag is {{ $value | humanizeDuration }}: the flow does not keep up with its input, "
             "alerts come that much later."),
        Rule("SentinelKafkaConsumerLagHigh",
             f"sum by (job, instance, topic) (sentinel_kafka_consumer_lag{{{j}}}) > 100000", "10m", "warning",
             "Sentinel {{ $labels.instance }} is {{ $value }} messages behind on {{ $labels.topic }}",
             "The Kafka source is more than 100000 messages behind on a topic for 10 minutes."),
        Rule("SentinelWindowCloseLagHigh",
             f"histogram_quantile(0.99, sum by (job, instance, le) "
             f"(rate(sentinel_window_close_lag_seconds_bucket{{{j}}}[10m]))) > 900", "15m", "warning",
             "Sentinel {{ $labels.instance }} closes windows over 15 minutes late",
             "p99 window close lag is {{ $value | humanizeDuration }}: a partition holds the watermark back or "
             "the flow is behind."),
        Rule("SentinelDeadLetterRatioHigh",
             f"sum by (job, instance) (rate(sentinel_events_total{{{j},outcome=\"dead_letter\"}}[10m])) / "
             f"sum by (job, instance) (rate(sentinel_events_total{{{j}}}[10m])) > 0.05", "10m", "warning",
             "Over 5% of Sentinel {{ $labels.instance }}'s input is dead-lettered",
             "{{ $value | humanizePercentage }} of the records go to the dead-letter sink: a producer sends "
             "records Sentinel cannot read (see sentinel_dead_letters_total by reason)."),
        Rule("SentinelPublishFailures",
             f"sum by (job, instance, sink) (rate(sentinel_sink_errors_total{{{j}}}[5m])) > 0", "10m", "critical",
             "Sentinel {{ $labels.instance }} fails to deliver to its {{ $labels.sink }} sink",
             "Delivery attempts to {{ $labels.sink }} have been failing for 10 minutes; alerts wait in the spool "
             "(RabbitMQ, Kafka) or are not indexed (qdrant)."),
        Rule("SentinelSpoolGrowing",
             f"sum by (job, instance, sink) (sentinel_spool_pending{{{j}}}) > 0 and "
             f"sum by (job, instance, sink) (deriv(sentinel_spool_pending{{{j}}}[15m])) > 0", "15m", "warning",
             "Sentinel {{ $labels.instance }}'s {{ $labels.sink }} spool keeps growing",
             "{{ $value }} alerts wait in the spool and the number has grown for 15 minutes: the broker does not "
             "take them. When the spool is full the flow waits."),
        Rule("SentinelStepErrors",
             f"sum by (job, instance, step) (increase(sentinel_step_errors_total{{{j}}}[10m])) > 0", "0m", "warning",
             "Sentinel step {{ $labels.step }} raised on {{ $labels.instance }}",
             "A batch raised inside step {{ $labels.step }} and was dead-lettered (reason step_error); the key "
             "went on with its state. The log names the key and the exception."),
        Rule("SentinelRestarting",
             f"changes(process_start_time_seconds{{{j}}}[30m]) > 2", "0m", "warning",
             "Sentinel {{ $labels.instance }} restarted {{ $value }} times in 30 minutes",
             "A process that keeps restarting resumes from its last snapshot each time and may never catch up: "
             "check its log for a recovery store it cannot open, a refused flow change or a crash."),
    ]


def rule_groups(job: str = JOB) -> List[dict]:
    rules = []
    for r in _rules(job):
        d: Dict[str, object] = {"alert": r.alert, "expr": r.expr}
        if r.for_ != "0m":
            d["for"] = r.for_
        d["labels"] = {"severity": r.severity, "service": "sentinel"}
        d["annotations"] = {"summary": r.summary, "description": r.description}
        rules.append(d)
    return [{"name": "sentinel.health", "rules": rules}]


def rules_file(job: str = JOB) -> dict:
    return {"groups": rule_groups(job)}


def prometheus_rule(job: str = JOB) -> dict:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "sentinel", "labels": {"app.kubernetes.io/name": "sentinel", "role": "alert-rules"}},
        "spec": {"groups": rule_groups(job)},
    }


# --- Files --------------------------------------------------------------------------------------------

HEADER = "# Generated by `python -m sentinel.dashboards --out k8s/base`: edit sentinel/dashboards.py, not this file.\n"


def _yaml(doc: dict) -> str:
    return HEADER + yaml.safe_dump(doc, sort_keys=False, width=120, allow_unicode=True)


def render() -> Dict[str, str]:
    """Every generated file, by path relative to the output directory."""
    files = {f"dashboards/{d.uid}.json": json.dumps(build_dashboard(d), indent=2, sort_keys=True) + "\n"
             for d in DASHBOARDS}
    files["rules/sentinel.rules.yaml"] = _yaml(rules_file())
    files["prometheusrule.yaml"] = _yaml(prometheus_rule())
    return files


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sentinel.dashboards",
                                 description="Write (or check) Sentinel's Grafana dashboards and Prometheus rules.")
    ap.add_argument("--out", default="k8s/base", help="output directory (default: k8s/base)")
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if a committed file is stale")
    args = ap.parse_args(argv)
    out = Path(args.out)
    stale = []
    for rel, text in render().items():
        path = out / rel
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        stale.append(str(path))
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if args.check and stale:
        print("stale (run python -m sentinel.dashboards --out %s): %s" % (args.out, ", ".join(stale)),
              file=sys.stderr)
        return 1
    if not args.check:
        print("wrote %d file(s) under %s" % (len(stale), out) if stale else f"{out}: up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
