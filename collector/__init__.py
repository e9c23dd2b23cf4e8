"""The collector's request processing: SDK payloads in, canonical events and typed dead letters out.

The HTTP app (auth, gzip, status codes, producing to Kafka) wraps `process_messages`; everything here
is pure logic with no I/O beyond reading the schema files once.
"""

from __future__ import annotations
