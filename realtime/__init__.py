"""Realtime consumer: tracking.events (group realtime.counters) into per-tenant Redis counters and user sketches.

consumer.py (Kafka, rebalances, rebuilds) → pipeline.py (batches in flight) → decoding.py (the
loader's decoder) → apply.py (exactly-once writes) with aggregate.py, batch.py, writes.py, hll.py
and resp.py; reconcile.py compares the counters with the warehouse rollups.
"""
