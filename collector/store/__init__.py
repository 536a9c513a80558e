"""SQL storage: the schema (models.py), engines and migrations (db.py; the Alembic scripts stay
in collector/migrations), the write side (writer, writebatch, store and its readings, runs and
intervals parts, aggregate) and the read side (reads, queries).

Imports: sqlalchemy, parawatt_proto (run ownership, limits, the plain records of the contract's
messages), collector.records, collector.summary, collector.energy (step statistics),
collector.errors and collector.metrics.state (the writer reports its backlog there); never grpc,
ingest, join or report.
"""
