"""What an operator sees of a running server: Prometheus metrics, structured logs, traces."""
