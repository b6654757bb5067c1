"""Every key of a flow definition is documented (Field(description=...)) and `sentinel check --explain` prints it."""

from __future__ import annotations

import subprocess
import sys
import typing
from pathlib import Path

from pydantic import BaseModel

from sentinel import config
from sentinel.config import FlowConfig, key_reference

ROOT = Path(__file__).resolve().parents[1]


def _models(model: type, seen: set) -> None:
    """Every pydantic model reachable from ``model`` through its fields' types."""
    if model in seen:
        return
    seen.add(model)

    def inner(t):
        if isinstance(t, type) and issubclass(t, BaseModel):
            yield t
        for a in typing.get_args(t):
            yield from inner(a)

    for f in model.model_fields.values():
        for m in inner(f.annotation):
            _models(m, seen)


def test_every_field_of_every_section_has_a_description():
    seen: set = set()
    _models(FlowConfig, seen)
    # every model class in sentinel/config.py is reachable (none is left out of the walk)
    declared = {v for v in vars(config).values()
                if isinstance(v, type) and issubclass(v, config._Model) and v.model_fields}
    assert declared - {config._SpooledSink} <= seen, declared - seen
    missing = [f"{m.__name__}.{name}" for m in seen for name, f in m.model_fields.items()
               if not (f.description or "").strip()]
    assert not missing, f"fields without Field(description=...): {missing}"
    assert sum(len(m.model_fields) for m in seen) > 200


def test_reference_lists_every_key_once_with_type_and_default():
    rows = key_reference()
    paths = [r.path for r in rows]
    assert len(paths) == len(set(paths))
    by = {r.path: r for r in rows}
    assert by["windows.size"].type == "duration" and by["windows.size"].default == "60.0"
    assert by["source"].default == "required"
    assert by["source (kind: kafka).topics"].default == "required"
    assert by["sinks[] (kind: rabbitmq).spool_max_bytes"].type.startswith("size")
    assert by["detection.token_abuse.persistence"].type == "int, >= 1"
    assert by["alerting.silences[].matchers"].description.startswith("Alert fields")
    assert by["policies.budgets[].per"].type == "service | tenant | user"
    assert by["control"].type == "section | null"
    # every sink kind has its section
    kinds = typing.get_args(typing.get_args(config.Sink)[0])
    for k in kinds:
        kind = typing.get_args(k.model_fields["kind"].annotation)[0]
        assert f"sinks[] (kind: {kind}).kind" in by, kind


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sentinel.cli", *args], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)


def test_check_explain_prints_every_key():
    r = _cli("check", "--explain")
    assert r.returncode == 0, r.stderr
    for row in key_reference():
        assert f"{row.path}  (" in r.stdout, row.path
    assert "    Length of the tumbling event-time windows" in r.stdout


def test_check_explain_under_a_key_and_with_a_flow():
    r = _cli("check", "--explain", "detection.token_abuse")
    assert r.returncode == 0, r.stderr
    heads = [line.split("  (")[0] for line in r.stdout.splitlines() if not line.startswith(" ")]
    assert heads[0] == "detection.token_abuse" and all(h.startswith("detection.token_abuse") for h in heads)
    assert "detection.token_abuse.horizon" in heads
    r = _cli("check", "--explain", "nosuchkey")
    assert r.returncode == 2 and "no key starts with 'nosuchkey'" in r.stderr
    r = _cli("check", "-c", "flows/demo.yaml", "--explain", "windows.size")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].startswith("flows/demo.yaml: ok")
    assert r.stdout.splitlines()[1] == "windows.size  (duration, default 60.0)"


def test_check_still_needs_a_flow_without_explain():
    r = _cli("check")
    assert r.returncode == 2 and "-c/--config is required" in r.stderr
