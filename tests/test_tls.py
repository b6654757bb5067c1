"""Transport security against the real brokers: RabbitMQ over TLS with client certificates, Kafka over TLS.

A throwaway CA and certificates are made for each session (``cryptography``).
RabbitMQ on this machine listens on 5672 only and is shared by other tests, so
its TLS side is a TLS-terminating proxy started by the test on another
loopback port: it presents the server certificate, requires a client
certificate signed by the CA (mutual TLS, verification on both sides) and
forwards the AMQP bytes to 127.0.0.1:5672. Tansu takes a certificate and key
of its own (``--cert``/``--key``): the Kafka test runs a broker with a TLS
listener and the sink verifies it against the CA; Tansu does not ask for
client certificates, so Kafka's mutual TLS goes through the same proxy in
front of a plain Tansu whose advertised listener is the proxy.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import logging
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Dict, List, Optional

import pika
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from operators.alerts import make_alert
from sentinel.config import ConfigError, load_config_dict
from sentinel.tls import client_context, kafka_settings, read_secret
from sinks.rabbitmq import RabbitMQWriter, login_problem
from tests.conftest import drain_queue

SECRET_PASSWORD = "guest"  # RabbitMQ's guest password: here it plays the secret that must never show


# -- a throwaway PKI ---------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key, path: Path, password: Optional[bytes] = None) -> None:
    enc = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc))
    os.chmod(path, 0o600)


def _cert(subject: str, issuer_key, issuer_name, key, *, ca: bool = False, server: bool = False,
          client: bool = False) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer_name)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                          content_commitment=False, key_encipherment=False,
                                          data_encipherment=False, key_agreement=False, encipher_only=False,
                                          decipher_only=False), critical=True)
        b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    if server:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                         x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                            critical=False)
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    if client:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    if not ca:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                            critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _pem(cert: x509.Certificate, path: Path) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Dict[str, str]:
    d = tmp_path_factory.mktemp("pki")
    out: Dict[str, str] = {}
    for ca_name in ("ca", "rogue_ca"):
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _cert(f"sentinel test {ca_name}", ca_key, _name(f"sentinel test {ca_name}"), ca_key, ca=True)
        _pem(ca, d / f"{ca_name}.pem")
        out[ca_name] = str(d / f"{ca_name}.pem")
        if ca_name == "ca":
            srv_key = ec.generate_private_key(ec.SECP256R1())
            _pem(_cert("127.0.0.1", ca_key, ca.subject, srv_key, server=True), d / "server.pem")
            _write_key(srv_key, d / "server.key")
            cli_key = ec.generate_private_key(ec.SECP256R1())
            _pem(_cert("sentinel-client", ca_key, ca.subject, cli_key, client=True), d / "client.pem")
            _write_key(cli_key, d / "client.key", b"client-key-password")
        else:
            rogue_key = ec.generate_private_key(ec.SECP256R1())
            _pem(_cert("intruder", ca_key, ca.subject, rogue_key, client=True), d / "rogue.pem")
            _write_key(rogue_key, d / "rogue.key")
    out.update({k: str(d / f) for k, f in (("server_cert", "server.pem"), ("server_key", "server.key"),
                                           ("client_cert", "client.pem"), ("client_key", "client.key"),
                                           ("rogue_cert", "rogue.pem"), ("rogue_key", "rogue.key"))})
    out["client_key_password"] = "client-key-password"
    return out


# -- a TLS-terminating proxy that verifies client certificates ------------------------------


class TLSProxy:
    """Listens with TLS on a free loopback port, requires a client certificate from ``ca_file``, forwards to
    ``upstream``. ``peers`` lists the common names of the clients it let through, ``refused`` the handshakes
    it failed."""

    def __init__(self, pki: Dict[str, str], upstream: tuple, require_client_cert: bool = True) -> None:
        self.upstream = upstream
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(pki["server_cert"], pki["server_key"])
        if require_client_cert:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(pki["ca"])
        self.ctx = ctx
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(32)
        self.port = self.sock.getsockname()[1]
        self.peers: List[str] = []
        self.refused: List[str] = []
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                raw, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        raw.settimeout(10)
        try:
            conn = self.ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as ex:
            self.refused.append(type(ex).__name__ + ": " + str(ex)[:120])
            raw.close()
            return
        cert = conn.getpeercert() or {}
        cn = next((v for rdn in cert.get("subject", ()) for k, v in rdn if k == "commonName"), None)
        self.peers.append(cn or "-")
        try:
            up = socket.create_connection(self.upstream, timeout=10)
        except OSError:  # the broker behind the proxy is gone (the test is ending): drop the client
            conn.close()
            return
        conn.settimeout(None)
        up.settimeout(None)

        def pump(a: socket.socket, b: socket.socket) -> None:
            try:
                while True:
                    data = a.recv(65536)
                    if not data:
                        break
                    b.sendall(data)
            except OSError:
                pass
            finally:
                for s in (a, b):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        threading.Thread(target=pump, args=(up, conn), daemon=True).start()
        pump(conn, up)

    def close(self) -> None:
        self._stop = True
        self.sock.close()


@pytest.fixture
def amqps_proxy(pki, rabbitmq_url):
    p = pika.URLParameters(rabbitmq_url)
    proxy = TLSProxy(pki, (p.host, p.port))
    yield proxy
    proxy.close()


def _alerts(n: int = 3):
    return [make_alert("latency", "latency_p95_ms", 4000.0 + i, 800.0, 0.97, "high", "robust_z", 1.8e9 + 60 * i,
                       "svc-tls", "m1", now=1.8e9 + 60 * i + 5) for i in range(n)]


# -- RabbitMQ ----------------------------------------------------------------------------------


def test_rabbitmq_sink_delivers_over_mutual_tls_from_the_flow_definition(pki, amqps_proxy, rabbitmq_url,
                                                                         fresh_rabbit, tmp_path, monkeypatch,
                                                                         caplog):
    from flows import make_alert_sinks

    names = fresh_rabbit()
    monkeypatch.setenv("SENTINEL_TEST_AMQP_PASSWORD", SECRET_PASSWORD)
    key_pw = tmp_path / "key-password"
    key_pw.write_text(pki["client_key_password"] + "\n")
    cfg = load_config_dict({
        "name": "tls", "source": {"kind": "simulator"}, "metrics": {"port": 0},
        "sinks": [{"kind": "rabbitmq", "url": f"amqps://guest@127.0.0.1:{amqps_proxy.port}/%2F",
                   "password": {"env": "SENTINEL_TEST_AMQP_PASSWORD"}, "spool_dir": str(tmp_path / "spool"),
                   "exchange": names["exchange"], "high_queue": names["high_queue"],
                   "low_queue": names["low_queue"], "envelope": "none",
                   "tls": {"ca_file": pki["ca"], "cert_file": pki["client_cert"], "key_file": pki["client_key"],
                           "key_password": {"file": str(key_pw)}}}],
    })
    caplog.set_level(logging.DEBUG)
    (sink,) = make_alert_sinks(cfg)
    part = sink.build("out", 0, 1)
    alerts = _alerts()
    part.write_batch(alerts)
    part._writer.flush(30)
    assert part._writer.pending == 0
    part.close()

    got = drain_queue(rabbitmq_url, names["high_queue"])
    assert [props.message_id for _, props, _ in got] == [a.alert_id for a in alerts]
    assert json.loads(got[0][2])["service"] == "svc-tls"
    assert amqps_proxy.peers and set(amqps_proxy.peers) == {"sentinel-client"}, amqps_proxy.refused
    logs = "\n".join(r.getMessage() for r in caplog.records)
    assert "amqps://127.0.0.1:%d" % amqps_proxy.port in logs
    for secret in (pki["client_key_password"], ":" + SECRET_PASSWORD + "@"):
        assert secret not in logs


def test_rabbitmq_tls_refuses_what_does_not_verify(pki, amqps_proxy, tmp_path):
    url = f"amqps://guest:{SECRET_PASSWORD}@127.0.0.1:{amqps_proxy.port}/%2F"

    def connect(ctx) -> Exception:
        params = RabbitMQWriter._parameters(url, 30, 10.0, "test", None, ctx, None)
        try:
            pika.BlockingConnection(params).close()
        except Exception as ex:
            return ex
        raise AssertionError("connected")

    # Our CA and certificate, but no client certificate: the server side refuses the handshake.
    n = len(amqps_proxy.refused)
    assert isinstance(connect(client_context(pki["ca"])), pika.exceptions.AMQPConnectionError)
    assert len(amqps_proxy.refused) > n
    # A client certificate from another CA: refused too.
    n = len(amqps_proxy.refused)
    connect(client_context(pki["ca"], pki["rogue_cert"], pki["rogue_key"]))
    assert len(amqps_proxy.refused) > n
    # A server the client cannot verify (trusting only the rogue CA): the client refuses, and the
    # start-up check says so in one line.
    n_peers = len(amqps_proxy.peers)
    connect(client_context(pki["rogue_ca"], pki["client_cert"], pki["client_key"], pki["client_key_password"]))
    assert len(amqps_proxy.peers) == n_peers
    cfg = load_config_dict({"source": {"kind": "simulator"}, "sinks": [
        {"kind": "rabbitmq", "url": f"amqps://guest@127.0.0.1:{amqps_proxy.port}/%2F",
         "password": {"env": "SENTINEL_TEST_AMQP_PASSWORD"},
         "tls": {"ca_file": pki["rogue_ca"], "cert_file": pki["client_cert"], "key_file": pki["client_key"],
                 "key_password": {"env": "SENTINEL_TEST_KEY_PASSWORD"}}}]})
    s = cfg.sinks[0]
    os.environ["SENTINEL_TEST_AMQP_PASSWORD"] = SECRET_PASSWORD
    os.environ["SENTINEL_TEST_KEY_PASSWORD"] = pki["client_key_password"]
    try:
        why = login_problem(s.url, password=s.password, tls=s.tls)
        assert why is not None and "does not verify" in why and "\n" not in why, why
        assert SECRET_PASSWORD not in why.replace("guest@", "") and pki["client_key_password"] not in why
        # The right CA: the login goes through.
        s.tls.ca_file = pki["ca"]
        assert login_problem(s.url, password=s.password, tls=s.tls) is None
    finally:
        del os.environ["SENTINEL_TEST_AMQP_PASSWORD"], os.environ["SENTINEL_TEST_KEY_PASSWORD"]


# -- secrets in the flow definition ----------------------------------------------------------


def test_secrets_are_named_never_written(monkeypatch, tmp_path):
    base = {"source": {"kind": "simulator"}}
    for bad, where in (
        ({"kafka": {"brokers": "b:9092", "config": {"sasl.password": "hunter2"}}}, "kafka.config"),
        ({"sinks": [{"kind": "kafka", "brokers": "b:9092", "config": {"ssl.key.password": "hunter2"}}]},
         "sinks[0].config"),
        ({"sinks": [{"kind": "rabbitmq", "url": "amqps://u@h/%2F", "password": "hunter2"}]}, "sinks[0].password"),
        ({"sinks": [{"kind": "rabbitmq", "url": "amqps://u@h/%2F", "tls": {"key_password": "hunter2"}}]},
         "sinks[0].tls.key_password"),
        ({"sinks": [{"kind": "qdrant", "location": "https://q:6333", "api_key": "hunter2"}]}, "sinks[0].api_key"),
    ):
        with pytest.raises(ConfigError) as ei:
            load_config_dict({**base, **bad})
        assert where in str(ei.value) and "hunter2" not in str(ei.value), str(ei.value)
    with pytest.raises(ConfigError, match="needs an amqps:// url"):
        load_config_dict({**base, "sinks": [{"kind": "rabbitmq", "url": "amqp://u@h/%2F", "tls": {}}]})
    with pytest.raises(ConfigError, match="cert_file and key_file go together"):
        load_config_dict({**base, "sinks": [{"kind": "rabbitmq", "url": "amqps://u@h/%2F",
                                              "tls": {"cert_file": "/c.pem"}}]})

    monkeypatch.setenv("SENTINEL_TEST_KAFKA_PASSWORD", "s3cr3t-kafka")
    f = tmp_path / "pw"
    f.write_text("from-a-file\n")
    conf = {"security.protocol": "SASL_SSL", "sasl.mechanisms": "SCRAM-SHA-512", "sasl.username": "sentinel",
            "sasl.password": {"env": "SENTINEL_TEST_KAFKA_PASSWORD"}, "ssl.key.password": {"file": str(f)}}
    assert kafka_settings(conf) == {**conf, "sasl.password": "s3cr3t-kafka", "ssl.key.password": "from-a-file"}
    monkeypatch.delenv("SENTINEL_TEST_KAFKA_PASSWORD")
    with pytest.raises(ValueError, match="kafka.config.sasl.password: environment variable "
                                         "SENTINEL_TEST_KAFKA_PASSWORD is not set"):
        kafka_settings(conf)
    with pytest.raises(ValueError, match="cannot read /nonexistent"):
        read_secret({"file": "/nonexistent"}, "x")


def test_no_secret_in_check_output_or_start_up_errors(tmp_path):
    """``sentinel check`` and a start that fails on a secret name the keys, never the values."""
    flow = tmp_path / "flow.yaml"
    flow.write_text("""
source: {kind: simulator, hours: 0.01}
metrics: {port: 0}
kafka:
  brokers: 127.0.0.1:1
  config: {security.protocol: SASL_SSL, sasl.mechanisms: PLAIN, sasl.username: sentinel,
           sasl.password: {env: SENTINEL_TEST_KAFKA_PASSWORD}}
sinks:
  - {kind: stdout}
  - {kind: kafka, topic: alerts}
  - {kind: rabbitmq, url: "amqps://sentinel@127.0.0.1:1/%2F", password: {env: SENTINEL_TEST_AMQP_PASSWORD}}
  - {kind: qdrant, location: "http://127.0.0.1:1", api_key: {file: /nonexistent/qdrant-key}}
""")
    secrets = {"SENTINEL_TEST_KAFKA_PASSWORD": "kafka-S3CRET-value", "SENTINEL_TEST_AMQP_PASSWORD": "amqp-S3CRET"}
    env = {**os.environ, **secrets}
    check = subprocess.run([sys.executable, "-m", "sentinel.cli", "check", "-c", str(flow)], capture_output=True,
                           text=True, env=env, timeout=120)
    out = check.stdout + check.stderr
    for v in secrets.values():
        assert v not in out
    # Without the Qdrant key file the run stops at start, naming the key and the file.
    env2 = {k: v for k, v in env.items() if k != "SENTINEL_TEST_AMQP_PASSWORD"}
    run = subprocess.run([sys.executable, "-m", "sentinel.cli", "run", "-c", str(flow)], capture_output=True,
                         text=True, env=env2, timeout=120)
    assert run.returncode == 2
    err = run.stdout + run.stderr
    assert "Traceback" not in err, err
    assert "SENTINEL_TEST_AMQP_PASSWORD" in err or "qdrant-key" in err, err
    for v in secrets.values():
        assert v not in err


# -- Kafka ---------------------------------------------------------------------------------------
#
# Tansu 0.6.0 has --cert and --key, but refuses them together ("'--cert' cannot be used with '--key'")
# and with --cert alone still speaks plain TCP, so it has no usable TLS listener. Kafka over mutual TLS
# is tested through the verifying proxy: a plain Tansu whose advertised listener is the proxy, so every
# connection a client makes (bootstrap and the broker from the metadata) goes through TLS.


@pytest.fixture
def kafka_mtls(pki, tmp_path):
    from devtools.tansu import free_port, stop_tansu, tansu_binary

    plain = free_port()
    proxy = TLSProxy(pki, ("127.0.0.1", plain))
    log = tmp_path / "tansu.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen([tansu_binary(), "broker", "--listener-url", f"tcp://127.0.0.1:{plain}",
                                 "--advertised-listener-url", f"tcp://127.0.0.1:{proxy.port}",
                                 "--storage-engine", "memory://tansu/"],
                                stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        # The broker answers on its own port (metadata names the proxy, which a plain client cannot use).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", plain), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield f"127.0.0.1:{proxy.port}", proxy
    finally:
        proxy.close()
        stop_tansu(proc)


def _kafka_tls_config(pki, key_password_ref):
    return {"security.protocol": "SSL", "ssl.ca.location": pki["ca"],
            "ssl.certificate.location": pki["client_cert"], "ssl.key.location": pki["client_key"],
            "ssl.key.password": key_password_ref, "ssl.endpoint.identification.algorithm": "https"}


def test_kafka_sink_and_source_over_mutual_tls(pki, kafka_mtls, tmp_path, monkeypatch):
    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    from flows import make_alert_sinks
    from sources.kafka import broker_problem, consumer_config

    brokers, proxy = kafka_mtls
    monkeypatch.setenv("SENTINEL_TEST_KEY_PASSWORD", pki["client_key_password"])
    tls = _kafka_tls_config(pki, {"env": "SENTINEL_TEST_KEY_PASSWORD"})
    topic = "alerts-tls-" + uuid.uuid4().hex[:8]
    admin = AdminClient({**kafka_settings(tls), "bootstrap.servers": brokers, "log_level": 2})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(20)

    # The start-up check with the flow's settings: answers through TLS; with a CA that does not
    # know the server it names the failure, not the key's password.
    assert broker_problem(brokers, tls, timeout=10) is None
    rogue = {**tls, "ssl.ca.location": pki["rogue_ca"]}
    why = broker_problem(brokers, rogue, timeout=3)
    assert why and pki["client_key_password"] not in why

    cfg = load_config_dict({
        "name": "tls", "source": {"kind": "simulator"}, "metrics": {"port": 0},
        "kafka": {"brokers": brokers, "config": tls},
        "sinks": [{"kind": "kafka", "topic": topic, "spool_dir": str(tmp_path / "spool"), "envelope": "none"}],
    })
    (sink,) = make_alert_sinks(cfg)
    part = sink.build("out", 0, 1)
    alerts = _alerts()
    part.write_batch(alerts)
    part._writer.flush(30)
    part.close()

    c = Consumer({**consumer_config(brokers, "tls-test", cfg.sinks[0].config), "auto.offset.reset": "earliest",
                  "log_level": 2})
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        got = []
        deadline = time.monotonic() + 30
        while len(got) < len(alerts) and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and not m.error():
                got.append(json.loads(m.value()))
    finally:
        c.close()
    assert [a["alert_id"] for a in got] == [a.alert_id for a in alerts]
    assert proxy.peers and set(proxy.peers) == {"sentinel-client"}
    # A client without a certificate is refused by the listener.
    n = len(proxy.refused)
    no_cert = {k: v for k, v in tls.items() if not k.startswith(("ssl.certificate", "ssl.key"))}
    assert broker_problem(brokers, no_cert, timeout=3) is not None
    assert len(proxy.refused) > n
