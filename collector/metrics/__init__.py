"""Prometheus metrics: the live state the pipeline updates (state.py) and the HTTP exporter that
serves it (exporter.py).

Imports: collector.records, collector.config and collector.errors; never ingest, join or store.
"""
