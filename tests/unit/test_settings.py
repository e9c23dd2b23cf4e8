"""Settings come from ANALYTICS_* variables, and .env.example documents every one with its default."""

from __future__ import annotations

from pathlib import Path

import pytest

from analytics_core.settings import Settings
from analytics_core.topics import Topics

ROOT = Path(__file__).resolve().parents[2]


def read_env_example() -> dict[str, str]:
    pairs = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            pairs[key] = value
    return pairs


def test_env_example_lists_every_setting_with_its_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT / "tests")  # no .env here
    example = read_env_example()
    fields = Settings.model_fields
    assert set(example) == {f"ANALYTICS_{name.upper()}" for name in fields}
    defaults = Settings()
    for name in fields:
        written = example[f"ANALYTICS_{name.upper()}"]
        value = getattr(defaults, name)
        if isinstance(value, Path):
            assert Path(written).expanduser() == value, name
        elif isinstance(value, bool):
            assert written == str(value).lower(), name
        else:
            assert written == ("" if value is None else str(value)), name


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANALYTICS_KAFKA_BOOTSTRAP", "kafka-a:9092,kafka-b:9093")
    monkeypatch.setenv("ANALYTICS_REDIS_URL", "redis://cache.internal:6380/2")
    monkeypatch.setenv("ANALYTICS_STACK_KAFKA", "false")
    monkeypatch.setenv("ANALYTICS_TOPIC_PREFIX", "staging.")
    s = Settings()
    assert s.kafka_port == 9092
    assert (s.redis_host, s.redis_port) == ("cache.internal", 6380)
    assert s.stack_kafka is False
    assert Topics.from_settings(s).events == "staging.tracking.events"


def test_invalid_value_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANALYTICS_KAFKA_PARTITIONS", "0")
    with pytest.raises(ValueError, match="kafka_partitions"):
        Settings()
