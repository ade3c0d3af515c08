"""Prometheus: reading trial metrics (scrape or PromQL) and the tuner's own metrics."""
