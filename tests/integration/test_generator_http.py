"""`analytics generate --to http://…` against a capture server that sometimes answers 429."""

from __future__ import annotations

import base64
import gzip
import json
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from generator.cli import app
from generator.config import GeneratorConfig
from generator.run import run
from generator.segment import BATCH_LIMIT, to_segment
from generator.sinks import MemorySink

pytestmark = pytest.mark.integration

OK_BODY = b'{"code":200,"status":1,"error":null,"results":{}}'
THROTTLE_EVERY = 7  # every 7th request is answered 429, Retry-After: 0


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int


@dataclass
class Capture:
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def accepted(self) -> list[Request]:
        return [r for r in self.requests if r.status == 200]


@pytest.fixture()
def capture() -> Iterator[tuple[str, Capture]]:
    """A collector stand-in on an ephemeral loopback port, recording every request."""
    seen = Capture()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with seen.lock:
                status = 429 if (len(seen.requests) + 1) % THROTTLE_EVERY == 0 else 200
                seen.requests.append(Request(self.path, dict(self.headers.items()), body, status))
            self.send_response(status)
            reply = OK_BODY if status == 200 else b'{"code":429,"status":0,"error":"slow down"}'
            if status == 429:
                self.send_header("Retry-After", "0")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("use_gzip", [False, True])
def test_http_delivery_is_complete_despite_throttling(
    capture: tuple[str, Capture], tmp_path: Path, use_gzip: bool
) -> None:
    url, seen = capture
    args = [
        "--to",
        url,
        "--days",
        "1",
        "--events-per-day",
        "3000",
        "--start",
        "2024-01-01",
        "--seed",
        "31",
        "--write-key",
        "tenant_1=wk_one",
        "--truth",
        str(tmp_path / "truth.json"),
        "--no-progress",
    ]
    result = CliRunner().invoke(app, [*args, "--gzip"] if use_gzip else args)
    assert result.exit_code == 0, result.output
    expected = MemorySink()
    run(GeneratorConfig(seed=31, days=1, events_per_day=3000, start_us=1_704_067_200_000_000), expected)
    by_id = {e["event_id"]: e for e, _ in expected.records}
    keys = {"wk_one": "tenant_1", "tenant_2": "tenant_2", "tenant_3": "tenant_3"}

    assert sum(r.status == 429 for r in seen.requests) > 0
    arrived: Counter[str] = Counter()
    for request in seen.accepted:
        assert request.path == "/v1/batch"
        scheme, _, token = request.headers["Authorization"].partition(" ")
        user, _, password = base64.b64decode(token).decode().partition(":")
        assert scheme == "Basic" and password == "" and user in keys
        assert (request.headers.get("Content-Encoding") == "gzip") is use_gzip
        body = json.loads(gzip.decompress(request.body) if use_gzip else request.body)
        assert "sentAt" in body and 0 < len(body["batch"]) <= BATCH_LIMIT
        for message in body["batch"]:
            event = by_id[message["messageId"]]
            assert event["tenant_id"] == keys[user]
            assert message == to_segment(event, client_clock=False)
            arrived[message["messageId"]] += 1

    # Each record arrived once per send: resends twice under one messageId, nothing lost to the 429s.
    assert arrived == Counter(e["event_id"] for e, _ in expected.records)
    truth = json.loads((tmp_path / "truth.json").read_bytes())["counts"]["total"]
    assert sum(n - 1 for n in arrived.values()) == truth["duplicate"] > 0
    assert len(arrived) == truth["valid"] + truth["invalid"]
