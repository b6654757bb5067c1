"""Start-up and configuration errors: one clear line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devtools.tansu import free_port

ROOT = Path(__file__).resolve().parents[1]
SENTINEL = [sys.executable, "-m", "sentinel.cli"]


def run(args, timeout=120, **kw):
    return subprocess.run(SENTINEL + args, capture_output=True, text=True, timeout=timeout, cwd=ROOT, **kw)


def one_line(r, *needles):
    assert r.returncode not in (0, None), r.stderr
    assert "Traceback" not in r.stderr and "panicked" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


@pytest.fixture
def events(tmp_path):
    p = tmp_path / "events.jsonl"
    p.write_text('{"timestamp": 1767571200, "service": "s", "model": "m", "latency_ms": 100}\n')
    return p


def flow(tmp_path, text):
    p = tmp_path / "flow.yaml"
    p.write_text(text + "\nmetrics: {port: 0}\n")
    return str(p)


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "1e999"])
def test_non_finite_durations_are_refused(tmp_path, events, value):
    f = flow(tmp_path, f"source: {{kind: file, path: '{events}'}}\nwindows: {{size: {value}}}")
    r = run(["check", "-c", f])
    assert r.returncode == 2 and "windows.size" in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = run(["run", "-c", f])
    assert r.returncode == 2 and "windows.size" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_non_finite_numbers_and_sizes_are_refused(tmp_path, events):
    for text, key in [
        ("source: {kind: simulator, hours: .inf}", "source.hours"),
        (f"source: {{kind: file, path: '{events}'}}\ndetection: {{token_abuse: {{ratio: .inf}}}}",
         "detection.token_abuse.ratio"),
        (f"source: {{kind: file, path: '{events}'}}\nsinks: [{{kind: rabbitmq, spool_max_bytes: .inf}}]",
         "sinks[0].spool_max_bytes"),
    ]:
        r = run(["check", "-c", flow(tmp_path, text)])
        assert r.returncode == 2 and key in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_check_names_missing_paths(tmp_path):
    f = flow(tmp_path, f"source: {{kind: file, path: '{tmp_path / 'missing.jsonl'}'}}\n"
                       f"sinks: [{{kind: jsonl, path: '{tmp_path / 'no' / 'such' / 'dir' / 'a.jsonl'}'}}]")
    (tmp_path / "no").write_text("a file, not a directory")
    r = run(["check", "-c", f])
    assert r.returncode == 2, r.stdout + r.stderr
    assert "source.path" in r.stderr and "missing.jsonl" in r.stderr, r.stderr
    assert "sinks[0].path" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_check_does_not_create_anything(tmp_path, events):
    f = flow(tmp_path, f"source: {{kind: file, path: '{events}'}}\n"
                       f"sinks: [{{kind: jsonl, path: '{tmp_path / 'out' / 'a.jsonl'}'}}]")
    r = run(["check", "-c", f])
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "out").exists()


def test_a_wrong_rabbitmq_password_is_one_line(tmp_path, events, rabbitmq_url):
    url = rabbitmq_url.replace("guest:guest@", "guest:wrong-password@")
    f = flow(tmp_path, f"source: {{kind: file, path: '{events}'}}\n"
                       f"sinks: [{{kind: rabbitmq, url: '{url}', spool_dir: '{tmp_path / 'spool'}'}}]")
    line = one_line(run(["run", "-c", f]), "sinks[0]", "refused the login")
    assert "wrong-password" not in line


def test_an_uninitialised_recovery_directory_is_one_line(tmp_path, events):
    f = flow(tmp_path, f"source: {{kind: file, path: '{events}'}}")
    rec = tmp_path / "rec"
    rec.mkdir(mode=0o700)
    one_line(run(["run", "-c", f, "-r", str(rec)]), str(rec), "python -m bytewax.recovery")
    one_line(run(["run", "-c", f, "-r", str(tmp_path / "absent")]), "absent")


def test_an_unreachable_kafka_broker_is_one_line(tmp_path):
    brokers = f"127.0.0.1:{free_port()}"
    f = flow(tmp_path, f"source: {{kind: kafka, brokers: '{brokers}', topics: [llm.telemetry]}}")
    t0 = time.monotonic()
    one_line(run(["run", "-c", f], timeout=90), brokers)
    assert time.monotonic() - t0 < 60


def test_an_unreachable_control_broker_is_one_line(tmp_path, events):
    brokers = f"127.0.0.1:{free_port()}"
    f = flow(tmp_path, f"source: {{kind: file, path: '{events}'}}\ncontrol: {{brokers: '{brokers}', topic: ctl}}")
    one_line(run(["run", "-c", f], timeout=90), "control.brokers", brokers)


@pytest.mark.parametrize("args", [
    ["-i", "5", "-a", "127.0.0.1:2101"],
    ["-i", "1", "-a", "127.0.0.1:2101"],
    ["-i", "-1", "-a", "127.0.0.1:2101;127.0.0.1:2102"],
    ["-i", "0", "-a", "127.0.0.1;127.0.0.1:2102"],
    ["-i", "0", "-a", "127.0.0.1:notaport;127.0.0.1:2102"],
    ["-a", "127.0.0.1:2101;127.0.0.1:2102"],
    ["-i", "0"],
])
def test_a_bad_cluster_is_refused_at_once(tmp_path, events, args):
    f = flow(tmp_path, f"source: {{kind: file, path: '{events}'}}")
    t0 = time.monotonic()
    one_line(run(["run", "-c", f] + args, timeout=60))
    assert time.monotonic() - t0 < 20


@pytest.mark.parametrize("sig,pid", [(signal.SIGTERM, 0), (signal.SIGINT, 1)])
def test_a_signal_stops_a_process_waiting_for_its_peers(tmp_path, events, sig, pid):
    f = flow(tmp_path, f"source: {{kind: file, path: '{events}'}}")
    addrs = f"127.0.0.1:{free_port()};127.0.0.1:{free_port()}"
    p = subprocess.Popen(SENTINEL + ["run", "-c", f, "-i", str(pid), "-a", addrs], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(4)
        assert p.poll() is None, p.communicate()[1]
        p.send_signal(sig)
        out, err = p.communicate(timeout=15)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode != 0
    assert "Traceback" not in err and "panicked" not in err, err
    assert "waiting for" in err, err
