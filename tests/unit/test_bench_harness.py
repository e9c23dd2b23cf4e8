"""The bench harness: record arithmetic, the results JSON, and isolation of failing benchmarks."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

import bench.__main__ as bench_main
from analytics_core.events import check_event
from analytics_core.settings import Settings
from bench import bench_codec, harness
from bench.events import make_events
from bench.harness import RECORD_KEYS, Record, Scale, finalize, record, run_benchmarks, write_results

SETTINGS = Settings(kafka_bootstrap="127.0.0.1:1")  # never contacted: these benchmarks are fakes


def _quiet() -> Console:
    return Console(file=io.StringIO())


def test_record_without_baseline_has_null_ratio_and_target() -> None:
    rec = record("x", 10.0, "events/s")
    assert rec == {
        "name": "x",
        "value": 10.0,
        "unit": "events/s",
        "baseline": None,
        "ratio": None,
        "target": None,
        "meets_target": None,
    }


def test_ratio_and_meets_target_against_a_baseline_record() -> None:
    base = record("raw", 200.0, "events/s")
    ok = record("fast", 150.0, "events/s", baseline=base, target=">= 0.5 x baseline")
    slow = record("slow", 50.0, "events/s", baseline=("raw", 200.0), target=">= 0.5 x baseline")
    assert ok["baseline"] == {"name": "raw", "value": 200.0}
    assert ok["ratio"] == pytest.approx(0.75) and ok["meets_target"] is True
    assert slow["ratio"] == pytest.approx(0.25) and slow["meets_target"] is False


def test_upper_bound_and_absolute_targets() -> None:
    assert record("lat", 30.0, "ms", baseline=("b", 10.0), target="<= 2 x baseline")["meets_target"] is False
    assert record("lat", 15.0, "ms", baseline=("b", 10.0), target="<= 2 x baseline")["meets_target"] is True
    assert record("rate", 120_000.0, "events/s", target=">= 100,000 events/s")["meets_target"] is True
    assert record("p99", 260.0, "ms", target="<= 250")["meets_target"] is False


def test_ratio_target_without_known_baseline_is_undecided() -> None:
    rec = record("x", 5.0, "events/s", baseline="missing", target=">= 1.0 x baseline")
    assert rec["ratio"] is None and rec["meets_target"] is None
    assert finalize(rec, {"missing": 2.5})["ratio"] == pytest.approx(2.0)


def test_unparseable_target_is_rejected() -> None:
    with pytest.raises(ValueError, match="target"):
        record("x", 1.0, "events/s", target="faster than avro")


def _ok(settings: Settings, scale: Scale) -> list[Record]:
    return [record("base_rate", 100.0, "events/s")]


def _boom(settings: Settings, scale: Scale) -> list[Record]:
    raise RuntimeError("broker on fire")


def _later(settings: Settings, scale: Scale) -> list[Record]:
    # By name: the harness fills in the value of a record an earlier benchmark produced.
    return [record("derived_rate", 60.0, "events/s", baseline="base_rate", target=">= 0.5 x baseline")]


def test_failing_benchmark_is_reported_and_the_others_still_run() -> None:
    run = run_benchmarks([("ok", _ok), ("boom", _boom), ("later", _later)], SETTINGS, "small", _quiet())
    assert [r["name"] for r in run.records] == ["base_rate", "derived_rate"]
    assert run.failures == [{"benchmark": "boom", "error": "RuntimeError: broker on fire"}]
    derived = run.records[1]
    assert derived["baseline"] == {"name": "base_rate", "value": 100.0}
    assert derived["ratio"] == pytest.approx(0.6) and derived["meets_target"] is True


def test_results_json_shape_and_latest(tmp_path: Path) -> None:
    run = run_benchmarks([("ok", _ok), ("later", _later)], SETTINGS, "small", _quiet())
    path = write_results(run, SETTINGS, tmp_path)
    doc = json.loads(path.read_text())
    assert path.name.endswith("Z.json") and path.name != "latest.json"
    assert (tmp_path / "latest.json").read_text() == path.read_text()
    assert {"time", "scale", "host", "git_commit", "kafka_bootstrap", "records"} <= doc.keys()
    assert doc["scale"] == "small" and doc["kafka_bootstrap"] == "127.0.0.1:1"
    assert isinstance(doc["host"]["cores"], int)
    assert all(tuple(r) == RECORD_KEYS for r in doc["records"])
    assert doc["records"][1]["baseline"] == {"name": "base_rate", "value": 100.0}


def test_main_exits_non_zero_when_a_benchmark_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(harness, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(bench_main, "BENCHMARKS", [("ok", _ok), ("boom", _boom), ("later", _later)])
    assert bench_main.main([]) == 1
    assert "broker on fire" in capsys.readouterr().out
    names = [r["name"] for r in json.loads((tmp_path / "latest.json").read_text())["records"]]
    assert names == ["base_rate", "derived_rate"]
    assert bench_main.main(["--only", "ok", "later"]) == 0


def test_generated_events_are_valid_and_deterministic() -> None:
    events = make_events(3_000)
    for event in events:
        check_event(event)
    assert make_events(1_000) == events[:1_000]
    assert len({e["event_id"] for e in events}) == len(events)


def test_codec_bench_round_trips_at_a_tiny_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(bench_codec.EVENTS, "small", 2_000)
    monkeypatch.setattr(bench_codec, "REPEATS", 1)
    records = {r["name"]: r for r in bench_codec.run(SETTINGS, "small")}
    assert records["codec_protobuf_encode"]["baseline"]["name"] == "codec_avro_encode"
    assert records["codec_protobuf_encode"]["target"] == ">= 1.0 x avro"
    assert all(r["value"] > 0 for r in records.values())


def test_malformed_record_fails_only_its_benchmark() -> None:
    def bad(settings: Settings, scale: Scale) -> list[Record]:
        return [record("fine", 1.0, "events/s"), {"name": "no_value"}]

    run = run_benchmarks([("bad", bad), ("ok", _ok)], SETTINGS, "small", _quiet())
    assert [r["name"] for r in run.records] == ["base_rate"]
    assert run.failures[0]["benchmark"] == "bad"
