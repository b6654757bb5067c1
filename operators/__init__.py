"""Bytewax operators and the per-key StatefulLogic classes that wrap detectors."""
