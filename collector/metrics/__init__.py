"""Prometheus metrics: the live state the pipeline updates (state.py) and the HTTP exporter that
serves it (exporter.py).

Imports: parawatt_proto (TLS web config, the device gauges, the plain records of readings and
nodes), collector.records, collector.config and collector.errors; never ingest, join or store.
"""
