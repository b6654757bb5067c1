"""Entry point for ``python -m bytewax.run flows.main`` (flow definition in SENTINEL_FLOW).

The application layer: it starts the flow as ``sentinel run`` does (:mod:`sentinel.runtime`),
which builds it with :func:`flows.build_flow`.
"""

from __future__ import annotations

import os
import sys
from typing import Optional, Tuple

from bytewax.dataflow import Dataflow

from sentinel import shutdown
from sentinel.config import ConfigError, config_from_env
from sentinel.runtime import prepare, startup_checks, watched_flow


def _arg(flags: Tuple[str, ...], env: str) -> Optional[str]:
    """The value of a ``python -m bytewax.run`` option (``-r DIR``, ``--recovery-directory=DIR``), else ``env``."""
    argv = sys.argv
    for i, a in enumerate(argv):
        if a in flags and i + 1 < len(argv):
            return argv[i + 1]
        for f in flags:
            if f.startswith("--") and a.startswith(f + "="):
                return a[len(f) + 1:]
    return os.environ.get(env) or None


def get_flow() -> Dataflow:
    """The flow named by SENTINEL_FLOW (the embedded default when unset), metrics started."""
    try:
        cfg = config_from_env()
    except ConfigError as ex:
        raise SystemExit(str(ex)) from None
    recovery = _arg(("-r", "--recovery-directory"), "BYTEWAX_RECOVERY_DIRECTORY")
    startup_checks(cfg, "SENTINEL_FLOW", recovery, cluster_args=False)
    shared = prepare(cfg, int(_arg(("-i", "--process-id"), "BYTEWAX_PROCESS_ID") or 0), recovery,
                     os.environ.get("SENTINEL_FLOW") or None)
    shutdown.install()
    if recovery:
        shutdown.keep_windows_on_stop()
    return watched_flow(cfg, shared)


flow = get_flow()
