"""The join: markers meet readings per node and device (joiner.py is the entry; state,
markers, accum and idle are its parts), producing per-interval energy as plain records.

Imports: collector.energy (the pure core), collector.records and the contract's plain records
(parawatt_proto.records: readings, markers, devices; standard library only); never grpc, the
generated code, the store, metrics or the report.
"""
