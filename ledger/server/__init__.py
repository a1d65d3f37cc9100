"""The running service: composition root, HTTP API, metrics."""
