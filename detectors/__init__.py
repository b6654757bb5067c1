"""Streaming detectors: pure Python, no Bytewax, River protocol.

``make_univariate()`` (SPEC section 4) returns the per-metric detector the
flow uses by default.
"""

from detectors.robust import RobustBaseline, z_to_score
from detectors.univariate import UnivariateDetector


def make_univariate(**kwargs) -> UnivariateDetector:
    """The default per-metric streaming detector: ``update(ts, value) -> score``."""
    return UnivariateDetector(**kwargs)


__all__ = ["RobustBaseline", "UnivariateDetector", "make_univariate", "z_to_score"]
