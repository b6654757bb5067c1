"""LLM-Sentinel: streaming anomaly detection for LLM applications."""

__version__ = "0.1.0"
