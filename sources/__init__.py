"""Where telemetry enters: Bytewax sources that emit RawBatch items."""
