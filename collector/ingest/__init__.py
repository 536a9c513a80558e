"""Ingest: subscribers to the power daemons (subscriber.py), discovery of daemon addresses
(discovery.py) and the proto -> plain-record conversion (convert.py).

Imports: the contract package, collector.records and collector.errors; never join, store,
metrics or report. What it produces goes to collector.pipeline as plain records.
"""
