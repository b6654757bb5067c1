"""Entry point for ``python -m bytewax.run flows.main`` (flow definition in SENTINEL_FLOW)."""

from flows import get_flow

flow = get_flow()
