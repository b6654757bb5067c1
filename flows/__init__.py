"""The Sentinel dataflow: ``build_flow(config) -> Dataflow``.

    source -> parse (RawBatch -> per-key groups + dead letters)
           -> model windows  (per service/model: windows, baselines, detectors)
           -> service actors (per service: its users' and tenants' token use, token_abuse)
           -> attack counter (per security source: coordinated_attack)
           -> forecast       (per service/model, opt-in: info warnings of trends towards the alert level)
           -> alert filter   (silences, feedback)
           -> incidents      (per group: grouping, escalation, resolve)
           -> similar incidents (from the first qdrant sink's collection, if any)
           -> every configured alert sink
           -> dead letters -> the DLQ sink

Sources and sinks can be injected, so tests and benchmarks build the same
flow as production. ``python -m bytewax.run flows.main`` runs the flow that
``SENTINEL_FLOW`` names (:mod:`flows.main`, the application layer, like :mod:`sentinel.runtime`).
"""

from __future__ import annotations

import sys
import time

from typing import Any, Callable, Dict, List, Optional, Union

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import Sink

from operators.silences import AlertFilter, Controls, load_silences
from sentinel.config import FlowConfig, KafkaSink, QdrantSink, RabbitMQSink
from sentinel.core.signing import load_key
from sentinel.crosskey import CrossKey
from sentinel.redeploy import refresh_actor_state, refresh_attack_state, refresh_model_state

def make_source(cfg: FlowConfig) -> Source:
    src = cfg.source
    if src.kind == "file":
        from sources.file import FileSource

        return FileSource(src.path, src.encoding, src.batch_size, cfg.max_record_bytes)
    if src.kind == "kafka":
        from sources.kafka import KafkaSource

        return KafkaSource(src, cfg.windows.idle_partition)
    from sources.simulator import SimulatorSource

    return SimulatorSource(src)


def spool_args(s: Union[RabbitMQSink, KafkaSink], worker_index: int, worker_count: int) -> Dict[str, Any]:
    """A spooled writer's spool settings for one worker: its own directory, the orphans it adopts."""
    from sinks.spooled import worker_spool_dirs

    own, orphans = worker_spool_dirs(s.spool_base(), worker_index, worker_count)
    return {"spool_dir": own, "spool_max_bytes": s.spool_max_bytes, "drain_timeout": s.drain_timeout,
            "adopt_spools": orphans}


def make_masker(cfg: FlowConfig):
    """The flow's :class:`sentinel.pii.Masker` (None with ``privacy.enabled: false``); exits on an unusable key."""
    from sentinel.pii import masker_for

    try:
        return masker_for(cfg.privacy)
    except ValueError as ex:
        print(ex, file=sys.stderr)
        raise SystemExit(2) from None


def check_transport(cfg: FlowConfig) -> None:
    """Every secret of the flow readable now (else exit with one line each, naming the key); Qdrant API keys set."""
    from sentinel.tls import read_secret, secrets_problems

    problems = secrets_problems(cfg)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        raise SystemExit(2)
    from sinks.qdrant import set_api_key

    for i, s in enumerate(cfg.sinks):
        if isinstance(s, QdrantSink) and s.api_key is not None:
            set_api_key(s.location, read_secret(s.api_key, f"sinks[{i}].api_key"))


def make_alert_sinks(cfg: FlowConfig) -> List[Sink]:
    """One Bytewax sink per configured alert sink; each worker gets its own writer."""
    from sinks.base import AlertSink, event_source

    check_transport(cfg)

    source = event_source(cfg.name)
    masker = make_masker(cfg)
    sinks: List[Sink] = []
    for s in cfg.sinks:
        if s.kind == "jsonl":
            from sinks.files import JsonlWriter

            sinks.append(AlertSink(lambda i, n, p=s.path: JsonlWriter(p), s.envelope, source, masker))
        elif s.kind == "stdout":
            from sinks.files import StdoutWriter

            sinks.append(AlertSink(lambda i, n: StdoutWriter(), s.envelope, source, masker))
        elif s.kind == "rabbitmq":
            from sinks.rabbitmq import RabbitMQWriter

            def make_rabbitmq(i: int, n: int, s=s) -> RabbitMQWriter:
                from sentinel.tls import rabbitmq_connection

                return RabbitMQWriter(
                    url=s.url, exchange=s.exchange, bindings=s.bindings(),
                    connection_name="llm-sentinel/%s/worker-%d" % (cfg.name, i), **spool_args(s, i, n),
                    **rabbitmq_connection(s, "sinks[%d]" % cfg.sinks.index(s)))

            sinks.append(AlertSink(make_rabbitmq, s.envelope, source, masker))
        elif s.kind == "kafka":
            from sinks.kafka import KafkaWriter

            sign_key = _alert_sign_key(cfg)
            sinks.append(AlertSink(lambda i, n, s=s, k=sign_key: KafkaWriter(s.brokers, s.topic, s.config,
                                                                             sign_key=k, **spool_args(s, i, n)),
                                   s.envelope, source, masker))
        elif s.kind == "qdrant":
            from sinks.qdrant import QdrantWriter

            # Incident memory indexes the bare alert (the writer ignores the payload bytes).
            sinks.append(AlertSink(lambda i, n, s=s: QdrantWriter(s.location, s.collection), "none", source, masker))
        elif s.kind == "incident_store":
            from sinks.incident_store import IncidentStoreWriter

            # The store keeps the bare alert (SPEC section 2), one row per alert_id.
            sinks.append(AlertSink(lambda i, n, s=s: IncidentStoreWriter(
                s.url, s.password_env, s.table_prefix, **spool_args(s, i, n)), "none", source, masker))
        elif s.kind == "alertmanager":
            from sinks.alertmanager import AlertmanagerWriter

            sinks.append(AlertSink(lambda i, n, s=s: AlertmanagerWriter(
                s.url, s.firing_ttl, s.generator_url, s.timeout, **spool_args(s, i, n)), "none", source, masker))
        elif s.kind == "webhook":
            from sinks.webhook import WebhookWriter

            webhook_key = _webhook_key(s)
            sinks.append(AlertSink(lambda i, n, s=s, k=webhook_key: WebhookWriter(
                s.url, k, s.headers, s.timeout, **spool_args(s, i, n)), s.envelope, source, masker))
    return sinks


def _webhook_key(s) -> Optional[bytes]:
    """A webhook sink's signing key (hmac_key_env / hmac_key_file); exits with one line when unusable."""
    try:
        return load_key(s.hmac_key_env, s.hmac_key_file)
    except ValueError as ex:
        raise SystemExit(str(ex).replace("control.", "webhook ")) from None


def _alert_sign_key(cfg: FlowConfig) -> Optional[bytes]:
    """The control key, when there is one: Kafka alerts are signed with it (the control listener reads them back)."""
    c = cfg.control_settings()
    if c is None:
        return None
    return load_key(c.hmac_key_env, c.hmac_key_file)


def make_similar_incidents(cfg: FlowConfig) -> Optional[Callable[[dict], dict]]:
    """The ``similar_incidents`` step's callable, or None (no qdrant sink, or ``similar_limit: 0``).

    It reads the first qdrant sink of ``cfg``, also when the flow is built
    with injected alert sinks.
    """
    s = next((s for s in cfg.sinks if isinstance(s, QdrantSink)), None)
    if s is None or s.similar_limit == 0:
        return None
    from sinks.qdrant import IncidentMemory
    from sinks.similar import SimilarIncidents

    check_transport(cfg)
    return SimilarIncidents(IncidentMemory(s.location, s.collection, s.similar_limit, s.similar_min_score))


def make_dead_letter_sink(cfg: FlowConfig) -> Sink:
    from sinks.dead_letters import DeadLetterSink

    return DeadLetterSink(cfg.dead_letters, make_masker(cfg), cfg.privacy.dead_letter_raw == "original")


def build_flow(
    cfg: FlowConfig,
    source: Optional[Source] = None,
    alert_sinks: Optional[List[Sink]] = None,
    dead_letter_sink: Optional[Sink] = None,
    controls: Optional[Controls] = None,
    crosskey: Optional[CrossKey] = None,
    clock: Callable[[], float] = time.monotonic,
) -> Dataflow:
    """The flow of ``cfg``. What its steps share across keys is the flow's own: the silences and
    feedback (``controls``) and the cross-key references (``crosskey``), made here unless given (the
    runtime gives the ones its control listener and cross-key file feed). ``clock`` is the one wall
    clock (monotonic seconds) of the stateful steps: idle eviction, quiet windows, wall-time limits."""
    from operators.actors import actor_windows
    from operators.attacks import attack_counter
    from operators.guard import is_failure
    from operators.incidents import group_key, incidents
    from operators.model_windows import model_windows
    from operators.parse import parse

    from sentinel import pii

    pii.configure_logs(make_masker(cfg))
    controls = controls if controls is not None else Controls()
    crosskey = crosskey if crosskey is not None else CrossKey()
    flow = Dataflow(cfg.name)
    raw = op.input("input", flow, source if source is not None else make_source(cfg))
    det = cfg.detection
    parsed = parse("parse", raw, cfg)

    # Each stateful step is guarded: a batch that raises in it is a dead letter (operators/guard.py);
    # a restored key's state is refreshed to the current definition (sentinel/redeploy.py).
    streams = [model_windows("model_windows", parsed.models, cfg, crosskey, clock, refresh_model_state)]
    if det.token_abuse.enabled:
        streams.append(actor_windows("actor_windows", parsed.actors, cfg, clock, refresh_actor_state))
    from sentinel.policy_reload import holder_for

    policies = holder_for(cfg)  # hot: a watcher of the flow definition may replace them (sentinel/policy_reload.py)
    if cfg.policies.guardrail_audit is not None:  # every guardrail breach recorded (sinks/guardrail_audit.py)
        from sinks.guardrail_audit import GuardrailAuditSink

        op.output("guardrail_audit", op.map("audit_events", parsed.security, lambda kv: kv[1][2]),
                  GuardrailAuditSink(cfg.policies.guardrail_audit, make_masker(cfg)))
    if det.coordinated_attack.enabled:
        streams.append(attack_counter("attack_counter", parsed.security, cfg, clock, refresh_attack_state))
    if det.forecast.enabled:  # info warnings of trends heading for a key's alert level (operators/forecast.py)
        from operators.forecast import forecast

        streams.append(forecast("forecast", parsed.models, cfg, clock))
    if cfg.policies.enabled or policies.hot:  # budgets and allowed models per service (operators/budgets.py)
        from operators.budgets import budgets

        streams.append(budgets("budgets", parsed.models, parsed.security, policies, clock))
    alerts = op.merge("alerts", *streams)
    alerts = op.map("unkey_alerts", alerts, lambda kv: kv[1])
    failed = op.branch("step_failures", alerts, is_failure)
    alerts = failed.falses

    # Silences and feedback, then one incident per group of related anomalies.
    load_silences(cfg.alerting.silences, controls)
    alerts = op.filter("alert_filter", alerts, AlertFilter(controls))
    group_by = tuple(cfg.alerting.group_by)
    grouped = op.key_on("group_key", alerts, lambda a: group_key(a, group_by))
    alerts = incidents("incidents", grouped, cfg.alerting, clock)
    alerts = op.map("unkey_incidents", alerts, lambda kv: kv[1])
    incident_failed = op.branch("incident_failures", alerts, is_failure)
    alerts = incident_failed.falses
    alerts = op.inspect("remember_alerts", alerts, lambda _step, a: controls.remember(a))
    similar = make_similar_incidents(cfg)
    if similar is not None:
        alerts = op.map("similar_incidents", alerts, similar)

    for i, sink in enumerate(alert_sinks if alert_sinks is not None else make_alert_sinks(cfg)):
        op.output(f"alerts_out_{i}", alerts, sink)

    dead = parsed.dead_letters
    failures = op.merge("step_failures_all", failed.trues, incident_failed.trues)
    dead = op.merge("all_dead_letters", dead, op.map("step_dead_letters", failures, lambda f: [f.dead_letter]))
    dls = dead_letter_sink if dead_letter_sink is not None else make_dead_letter_sink(cfg)
    op.output("dead_letters_out", dead, dls)
    return flow

