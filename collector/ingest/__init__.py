"""Ingest: subscribers to the power daemons (subscriber.py) and discovery of daemon addresses
(discovery.py). Stream messages become plain records through the contract's one mapping
(parawatt_proto.convert, shared with the daemon), not a converter of the collector's own.

Imports: the contract package (convert, records, transport), collector.records and
collector.errors; never join, store, metrics or report. What it produces goes to
collector.pipeline as plain records.
"""
