"""The traffic generator: determinism, configured shares, valid events, real geolocation, and a truth
file that matches an independent recount of the events it describes."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import statistics
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from iptocc import country_code
from typer.testing import CliRunner

from analytics_core.deadletter import REASONS
from analytics_core.events import EventError, check_event
from generator.cli import app
from generator.config import HOUR_US, GeneratorConfig
from generator.geo import BOT_BLOCKS, COUNTRY_TABLE
from generator.http_sink import retry_delay
from generator.run import RunResult, run
from generator.segment import from_segment, to_segment
from generator.sinks import MemorySink, NullSink, dead_letter

START_US = 1_704_067_200_000_000  # 2024-01-01T00:00:00Z
STEPS = ("page_view", "add_to_cart", "checkout", "purchase")
Records = list[tuple[dict[str, Any], str | None]]


def generate(**options: Any) -> tuple[Records, RunResult]:
    sink = MemorySink()
    result = run(GeneratorConfig(start_us=START_US, **options), sink)
    return sink.records, result


def digest(records: Records, truth: dict[str, Any]) -> tuple[str, str]:
    events = hashlib.sha256(b"".join(orjson.dumps(r) for r in records)).hexdigest()
    return events, hashlib.sha256(orjson.dumps(truth, option=orjson.OPT_SORT_KEYS)).hexdigest()


@pytest.fixture(scope="module")
def sample() -> tuple[Records, dict[str, Any]]:
    """About 200k records over two days: the sample most tests check."""
    records, result = generate(seed=7, days=2, events_per_day=100_000)
    return records, result.truth.to_dict()


def test_same_seed_gives_identical_events_and_truth() -> None:
    first = digest(*_records_and_truth(seed=3))
    assert first == digest(*_records_and_truth(seed=3))
    other = digest(*_records_and_truth(seed=4))
    assert other[0] != first[0] and other[1] != first[1]


def _records_and_truth(seed: int) -> tuple[Records, dict[str, Any]]:
    records, result = generate(seed=seed, days=1, events_per_day=20_000)
    return records, result.truth.to_dict()


def test_shares_are_near_the_configured_ones(sample: tuple[Records, dict[str, Any]]) -> None:
    records, _ = sample
    n = len(records)
    assert 180_000 < n < 220_000
    seen: set[str] = set()
    counts: Counter[str] = Counter()
    for event, kind in records:
        if kind is not None:
            counts["invalid"] += 1
        elif event["event_id"] in seen:
            counts["duplicate"] += 1
        else:
            seen.add(event["event_id"])
            counts["bot"] += event["is_bot"]
            counts["late"] += event["received_at"] - event["timestamp"] > HOUR_US
    for name, configured in (("invalid", 0.01), ("late", 0.02), ("duplicate", 0.01), ("bot", 0.03)):
        assert counts[name] / n == pytest.approx(configured, rel=0.2), name


def test_valid_events_pass_the_canonical_model_and_invalid_ones_are_broken(
    sample: tuple[Records, dict[str, Any]],
) -> None:
    records, _ = sample
    kinds: Counter[str] = Counter()
    for event, kind in records:
        # The documented skew correction holds for every record, resends and invalid ones included.
        assert event["received_at"] - (event["sent_at"] - event["original_timestamp"]) == event["timestamp"]
        if kind is None:
            check_event(event)
            continue
        kinds[kind] += 1
        assert _flaw(event) == kind
    assert set(kinds) == {
        "missing_event_name",
        "negative_revenue",
        "non_numeric_revenue",
        "future_timestamp",
        "missing_user",
    }


def _flaw(event: dict[str, Any]) -> str:
    """What a collector would find wrong, judged from the event alone."""
    try:
        check_event(event)
    except EventError as exc:
        return {"event_type": "missing_event_name", "revenue": "non_numeric_revenue"}[exc.field]
    if event["user_id"] is None and event["anonymous_id"] is None:
        return "missing_user"
    if event["revenue"] is not None and event["revenue"] < 0:
        return "negative_revenue"
    if event["timestamp"] > event["received_at"] + 24 * HOUR_US:
        return "future_timestamp"
    return "valid"


def test_every_ip_geolocates_to_its_country(sample: tuple[Records, dict[str, Any]]) -> None:
    records, _ = sample
    pairs = {(e["ip"], e["country"]) for e, _ in records}
    ips = [ip for ip, _ in pairs]
    assert country_code(ips) == [c for _, c in pairs]
    assert all(ipaddress.IPv4Address(ip).is_global for ip in ips)


def test_ip_table_blocks_lie_wholly_in_their_country() -> None:
    for country, _, blocks in (*COUNTRY_TABLE, ("US", 0.0, BOT_BLOCKS)):
        for block in blocks:
            net = ipaddress.IPv4Network(block)
            sampled = [str(net.network_address + i) for i in range(0, net.num_addresses, 97)]
            assert set(country_code(sampled)) == {country}, block


def test_truth_equals_an_independent_recount(sample: tuple[Records, dict[str, Any]]) -> None:
    records, truth = sample
    expected = recount(records)
    assert truth["counts"]["total"] == expected["counts"]
    assert truth["funnel"] == expected["funnel"]
    assert truth["experiments"]["checkout_button"]["variants"] == expected["experiment"]
    assert set(truth["days"]) == set(expected["days"])
    for day, tenants in expected["days"].items():
        for tenant, cell in tenants.items():
            got = truth["days"][day][tenant]
            assert got["events"] == cell["events"]
            assert got["revenue_cents"] == cell["revenue_cents"]
            assert got["purchases"] == cell["purchases"]
            assert got["active_users"] == len(cell["users"])
            assert got["events_by_type"] == {s: cell["types"][s] for s in STEPS}
            assert {c: v["revenue_cents"] for c, v in got["by_country"].items()} == cell["country_cents"]
            assert {d: v["events"] for d, v in got["by_device"].items()} == cell["device_events"]


def recount(records: Records) -> dict[str, Any]:
    """Plain-Python recount of what the truth file claims, from the events alone."""
    counts: Counter[str] = Counter(sent=len(records))
    by_kind: Counter[str] = Counter()
    seen: set[str] = set()
    days: dict[str, dict[str, Any]] = defaultdict(dict)
    sessions: dict[str, list[set[str]]] = defaultdict(lambda: [set() for _ in STEPS])
    users: dict[str, list[set[str]]] = defaultdict(lambda: [set() for _ in STEPS])
    step_events: dict[str, list[int]] = defaultdict(lambda: [0] * len(STEPS))
    arms: dict[str, dict[str, set[str]]] = defaultdict(lambda: {"exposed": set(), "converted": set()})
    for event, kind in records:
        if kind is not None:
            counts["invalid"] += 1
            by_kind[kind] += 1
            continue
        if event["event_id"] in seen:
            counts["duplicate"] += 1
            continue
        seen.add(event["event_id"])
        counts["valid"] += 1
        if event["is_bot"]:
            counts["bot"] += 1
            continue
        counts["human"] += 1
        counts["late"] += event["received_at"] - event["timestamp"] > HOUR_US
        tenant, user, step = event["tenant_id"], event["user_id"] or event["anonymous_id"], event["event_type"]
        day = datetime.fromtimestamp(event["timestamp"] / 1e6, UTC).date().isoformat()
        cell = days[day].setdefault(
            tenant,
            {
                "events": 0,
                "revenue_cents": 0,
                "purchases": 0,
                "users": set(),
                "types": Counter(),
                "country_cents": Counter(),
                "device_events": Counter(),
            },
        )
        cents = round(event["revenue"] * 100) if step == "purchase" else 0
        cell["events"] += 1
        cell["revenue_cents"] += cents
        cell["purchases"] += step == "purchase"
        cell["users"].add(user)
        cell["types"][step] += 1
        cell["country_cents"][event["country"]] += cents
        cell["device_events"][event["device"]] += 1
        i = STEPS.index(step)
        sessions[tenant][i].add(json.loads(event["properties"])["session_id"])
        users[tenant][i].add(user)
        step_events[tenant][i] += 1
        if event["experiment_variant"] and step in ("checkout", "purchase"):
            arms[event["experiment_variant"]]["exposed" if step == "checkout" else "converted"].add(user)
    kinds = ("missing_event_name", "negative_revenue", "non_numeric_revenue", "future_timestamp", "missing_user")
    reasons = {
        "schema_violation": sum(by_kind[k] for k in kinds if k != "future_timestamp"),
        "enrichment_failure": by_kind["future_timestamp"],
    }
    return {
        "counts": {
            **{k: counts[k] for k in ("sent", "valid", "human", "bot", "late", "duplicate", "invalid")},
            "invalid_by_kind": {k: by_kind[k] for k in kinds},
            "invalid_by_reason": reasons,
        },
        "days": days,
        "funnel": {
            t: {
                "steps": list(STEPS),
                "sessions": [len(s) for s in sessions[t]],
                "users": [len(u) for u in users[t]],
                "events": step_events[t],
            }
            for t in sorted(sessions)
        },
        "experiment": {
            v: {
                "exposed_users": len(a["exposed"]),
                "converters": len(a["converted"]),
                "conversion_rate": len(a["converted"]) / len(a["exposed"]),
            }
            for v, a in arms.items()
        },
    }


def test_funnel_is_monotonic_with_realistic_drop_off(sample: tuple[Records, dict[str, Any]]) -> None:
    _, truth = sample
    for funnel in truth["funnel"].values():
        sessions, users = funnel["sessions"], funnel["users"]
        assert sessions == sorted(sessions, reverse=True) and users == sorted(users, reverse=True)
        assert sessions[1] / sessions[0] == pytest.approx(0.30, abs=0.03)
        assert sessions[2] / sessions[1] == pytest.approx(0.50, abs=0.05)
        assert sessions[3] / sessions[2] == pytest.approx(0.61, abs=0.06)


def test_bots_fire_far_above_human_rates(sample: tuple[Records, dict[str, Any]]) -> None:
    records, _ = sample
    humans: Counter[tuple[str, str]] = Counter()
    bots: Counter[tuple[str, str]] = Counter()
    for event, kind in records:
        if kind is None:
            key = (event["tenant_id"], event["user_id"] or event["anonymous_id"])
            (bots if event["is_bot"] else humans)[key] += 1
            if event["is_bot"]:
                assert event["device"] == "bot" and "bot" in event["user_agent"].lower()
    assert len(bots) == 3
    assert min(bots.values()) > 5 * max(humans.values())
    assert min(bots.values()) > 100 * statistics.median(humans.values())


@pytest.mark.slow
def test_experiment_realised_lift_is_near_the_true_lift() -> None:
    # Many users, few sessions each: a user is exposed once, so exposures grow with the user count.
    result = run(GeneratorConfig(seed=11, days=2, events_per_day=400_000, users=400_000, start_us=START_US), NullSink())
    experiment = result.truth.to_dict()["experiments"]["checkout_button"]
    assert min(v["exposed_users"] for v in experiment["variants"].values()) > 10_000
    assert experiment["true_relative_lift"] == 0.10
    assert experiment["realised_relative_lift"] == pytest.approx(0.10, abs=0.04)


def test_segment_messages_round_trip_to_canonical_events(sample: tuple[Records, dict[str, Any]]) -> None:
    records, _ = sample
    for event, kind in records[:5000]:
        if kind is not None:
            continue
        for client_clock in (True, False):
            back = from_segment(to_segment(event, client_clock), event["tenant_id"], event["received_at"])
            # Skew correction, receivedAt - (sentAt - timestamp), gives back the true event time.
            assert back["timestamp"] == event["timestamp"]
            unenriched = {"country": None, "device": None, "is_bot": False, "timestamp": back["timestamp"]}
            if not client_clock:
                unenriched |= {"original_timestamp": event["timestamp"], "sent_at": None}
            assert back == event | unenriched


def test_dead_letters_carry_typed_reasons(sample: tuple[Records, dict[str, Any]]) -> None:
    records, _ = sample
    letters = [dead_letter(e, k) for e, k in records if k is not None]
    assert {d.reason for d in letters} <= set(REASONS)
    assert {d.source for d in letters} == {"generator"}
    assert all("messageId" in d.payload for d in letters)


def test_live_mode_stamps_events_with_the_current_time() -> None:
    began = time.time_ns() // 1000
    records, result = generate(seed=5, rate=2_000, duration=1.0)
    ended = time.time_ns() // 1000
    assert result.seconds >= 0.9
    assert result.truth.to_dict()["generator"]["mode"] == "live"
    on_time = [e for e, k in records if k is None and e["received_at"] - e["timestamp"] < HOUR_US]
    # Sessions running at the start send their next events: some happened just before, none is received before.
    assert on_time and all(began - 2_000_000 <= e["timestamp"] <= e["received_at"] <= ended for e in on_time)
    assert min(e["received_at"] for e in on_time) >= began
    assert 1_700 < len(records) < 2_300


def test_retry_delay_honours_retry_after() -> None:
    assert retry_delay(0, "0") == 0.0
    assert retry_delay(3, "2.5") == 2.5
    assert retry_delay(3, "Wed, 21 Oct 2015 07:28:00 GMT") == retry_delay(3, None) > retry_delay(2, None)


def test_cli_writes_events_and_a_deterministic_truth_file(tmp_path: Path) -> None:
    args = ["--days", "1", "--events-per-day", "3000", "--start", "2024-01-01", "--seed", "9", "--no-progress"]
    runner = CliRunner()
    for name in ("a", "b"):
        result = runner.invoke(app, [*args, "--to", f"file:{tmp_path / name}.jsonl", "--truth", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    lines = (tmp_path / "a.jsonl").read_bytes().splitlines()
    assert len(lines) == json.loads((tmp_path / "a").read_bytes())["counts"]["total"]["sent"]


def test_cli_rejects_bad_options() -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["--write-key", "no-equals-sign"]).exit_code == 2
    assert runner.invoke(app, ["--to", "ftp://x"]).exit_code == 2
    assert runner.invoke(app, ["--invalid-share", "1.5"]).exit_code == 2
