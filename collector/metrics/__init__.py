"""Prometheus metrics: the live state the pipeline updates (state.py) and the HTTP exporter that
serves it (exporter.py).

Imports: parawatt_proto (TLS web config), collector.records, collector.config and
collector.errors; never ingest, join or store.
"""
