"""Realtime consumer: tracking.events (group realtime.counters) into Redis counters and HyperLogLogs.

Built in the realtime-layer issue.
"""
