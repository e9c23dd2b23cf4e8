"""Fixtures of the unit tests that use a local DuckLake warehouse."""

from __future__ import annotations

from pathlib import Path

import pytest

from analytics_core.settings import Settings


@pytest.fixture()
def lake(tmp_path: Path) -> Settings:
    """Settings of an empty warehouse in a temporary folder, ignoring any .env."""
    return Settings(warehouse_path=tmp_path / "wh", _env_file=None)  # type: ignore[call-arg]
