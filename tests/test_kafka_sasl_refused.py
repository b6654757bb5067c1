"""A Kafka login refused over SASL: the start stops at once with one line that says so, and the password shows nowhere.

Tansu 0.6.0 started with ``--authentication`` offers SCRAM-SHA-256 and
SCRAM-SHA-512 and answers nothing before a login, but its memory storage keeps
no SCRAM credentials, so every login is refused as an unknown user. That
refusal is reliable, and it is what these tests use: a flow definition whose
Kafka source (or Kafka alert sink) logs in with SCRAM-SHA-256 and a password
from the environment must be stopped by the start-up check of ``sentinel run``
with exit 2 and one line naming the client, the brokers and the refused SASL
login, well within the 10 s bound of the check, and neither that line, stdout,
nor any file the run leaves behind may hold the password.
``sentinel check`` connects to nothing (README): it accepts the definition and
does not print the password either.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devtools.tansu import TansuError, _tail, free_port, stop_tansu, tansu_binary

ROOT = Path(__file__).resolve().parents[1]
SENTINEL = [sys.executable, "-m", "sentinel.cli"]
PASSWORD_ENV = "SENTINEL_TEST_SASL_PASSWORD"
PASSWORD = "sasl-Pw-7c1f9e-never-printed"


@pytest.fixture(scope="module")
def sasl_brokers(tmp_path_factory):
    """``127.0.0.1:PORT`` of a Tansu that requires a SASL login (memory storage: it knows no user)."""
    log = tmp_path_factory.mktemp("tansu-sasl") / "tansu.log"
    port = free_port()
    address = f"127.0.0.1:{port}"
    with open(log, "wb") as f:
        proc = subprocess.Popen([tansu_binary(), "broker", "--listener-url", f"tcp://{address}",
                                 "--advertised-listener-url", f"tcp://{address}",
                                 "--storage-engine", "memory://tansu/", "--authentication"],
                                stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        # Nothing is answered before a login, so readiness is the listening port.
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise TansuError(f"Tansu exited with code {proc.returncode}; log:\n{_tail(log)}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TansuError(f"Tansu on {address} did not listen within 30s; log:\n{_tail(log)}")
                time.sleep(0.1)
        yield address
    finally:
        stop_tansu(proc)


SASL_CONFIG = f"""
    config:
      security.protocol: SASL_PLAINTEXT
      sasl.mechanisms: SCRAM-SHA-256
      sasl.username: sentinel
      sasl.password: {{env: {PASSWORD_ENV}}}
"""


def _flow(tmp_path: Path, brokers: str, client: str) -> Path:
    if client == "source":
        text = (f"source:\n    kind: kafka\n    brokers: {brokers}\n    topics: [llm.telemetry]\n" + SASL_CONFIG[1:]
                + f"sinks:\n  - {{kind: jsonl, path: {tmp_path / 'alerts.jsonl'}}}\n")
    else:
        events = tmp_path / "events.jsonl"
        events.write_text('{"timestamp": 1767571200, "service": "s", "model": "m", "latency_ms": 100}\n')
        text = (f"source: {{kind: file, path: {events}}}\n"
                f"sinks:\n  - kind: kafka\n    brokers: {brokers}\n    topic: llm.anomalies\n"
                f"    spool_dir: {tmp_path / 'spool'}\n" + SASL_CONFIG[1:])
    text += f"dead_letters: {{kind: jsonl, path: {tmp_path / 'dead.jsonl'}}}\nmetrics: {{port: 0}}\n"
    flow = tmp_path / "flow.yaml"
    flow.write_text(text)
    assert PASSWORD not in text
    return flow


def _sentinel(args, tmp_path: Path, env=None):
    env = {**os.environ, PASSWORD_ENV: PASSWORD} if env is None else env
    t0 = time.monotonic()
    r = subprocess.run(SENTINEL + args, capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    return r, time.monotonic() - t0


def _files_holding(tmp_path: Path, secret: str):
    """Every file under ``tmp_path`` (alerts, dead letters, spool segments, logs) whose bytes hold ``secret``."""
    return [p for p in tmp_path.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


@pytest.mark.parametrize("client,where", [("source", "source.brokers"), ("sink", "sinks[0].brokers")])
def test_a_refused_sasl_login_stops_the_start_in_one_line(sasl_brokers, tmp_path, client, where):
    flow = _flow(tmp_path, sasl_brokers, client)

    # sentinel check validates without connecting: it accepts the definition, and prints no password.
    check, _ = _sentinel(["check", "-c", str(flow)], tmp_path)
    assert check.returncode == 0, check.stderr
    assert "ok" in check.stdout and f"{'source kafka' if client == 'source' else 'kafka'}" in check.stdout
    assert PASSWORD not in check.stdout + check.stderr

    run, seconds = _sentinel(["run", "-c", str(flow)], tmp_path)
    assert run.returncode == 2, (run.returncode, run.stdout, run.stderr)
    assert seconds < 30, seconds  # the refusal is seen at the first login, not after a long wait
    assert "Traceback" not in run.stderr and "panicked" not in run.stderr, run.stderr
    lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, run.stderr
    line = lines[0]
    assert line.startswith(f"{flow}: {where}: Kafka brokers {sasl_brokers} refused the login"), line
    assert "SASL authentication" in line and "SCRAM" in line, line
    assert PASSWORD not in run.stdout + run.stderr
    assert not _files_holding(tmp_path, PASSWORD)
    # Nothing was delivered or spooled: the run stopped before the dataflow.
    assert not (tmp_path / "spool").exists() or not any(p.is_file() for p in (tmp_path / "spool").rglob("*"))


def test_the_password_is_read_from_the_environment(sasl_brokers, tmp_path):
    """The flow's password is the environment's: without the variable the start names it, not a login."""
    flow = _flow(tmp_path, sasl_brokers, "source")
    env = {k: v for k, v in os.environ.items() if k != PASSWORD_ENV}
    run, _ = _sentinel(["run", "-c", str(flow)], tmp_path, env=env)
    assert run.returncode == 2, run.stderr
    lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, run.stderr
    assert f"environment variable {PASSWORD_ENV} is not set" in lines[0], lines[0]
    assert "refused the login" not in lines[0]
