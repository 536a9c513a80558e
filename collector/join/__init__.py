"""The join: markers meet readings per node and device (joiner.py is the entry; state,
markers, accum and idle are its parts), producing per-interval energy as plain records.

Imports: collector.energy (the pure core) and collector.records; never grpc, the store, metrics
or the report.
"""
