"""The freshness bench's pure parts: the Server-Sent Events parser and the "did it increase" test."""

from __future__ import annotations

from bench.bench_freshness import SseParser, increased, minute_counts


def _frames(text: str) -> list[tuple[str, str]]:
    parser = SseParser()
    out = []
    for line in text.split("\n"):
        frame = parser.feed(line)
        if frame is not None:
            out.append(frame)
    return out


def test_sse_frames_as_the_live_endpoint_sends_them() -> None:
    text = 'retry: 2000\n\nevent: counters\nid: 1\ndata: {"a":1}\n\n: comment\nevent: correction\ndata: x\ndata: y\n\n'
    assert _frames(text) == [("counters", '{"a":1}'), ("correction", "x\ny")]


def test_sse_frame_without_event_name_is_a_message_and_one_without_data_is_dropped() -> None:
    assert _frames("data:plain\n\nevent: counters\n\n") == [("message", "plain")]


def test_an_increase_is_per_minute_and_a_minute_leaving_the_window_is_none() -> None:
    before = minute_counts([{"minute": "12:00", "traffic_events": 5}, {"minute": "12:01", "traffic_events": 2}])
    assert not increased(before, before)
    assert increased(before, {**before, "12:01": 3.0})
    assert increased(before, {"12:01": 2.0, "12:02": 1.0})  # a new minute with an event
    assert not increased(before, {"12:01": 2.0, "12:02": 0.0})  # 12:00 left the window, nothing new
    assert minute_counts([{"minute": "12:03"}]) == {"12:03": 0.0}
