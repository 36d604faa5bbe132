"""The ClickHouse sink: Kafka topics -> idempotent ClickHouse batches, and read-only SQL over HTTP.

Entry point: `clickwire sink` (services/sink/cli.py). The batch writer is `writer.BatchWriter`,
the per-topic row mapping `tables.py`, the /sql endpoint `server.py`, its client `client.py`.
"""
