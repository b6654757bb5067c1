"""Where alerts and dead letters leave the flow: one module per destination."""
