"""The server limits reach production: the CLIs pass server_options to uvicorn, and the API's factory adds the
body timeout; uvicorn can hand the protocol to worker processes (it pickles its config)."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from analytics_core.serving import BodyTimeout, HeadLimitsProtocol, server_options
from analytics_core.settings import Settings


def captured_run(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What uvicorn.run is called with, instead of running."""
    import uvicorn

    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(kw, app=app))
    return seen


@pytest.mark.parametrize(("module", "function", "factory"), [
    ("collector.cli", "serve_collector", "collector.main:build_app"),
    ("api.cli", "serve_api", "api.main:build_app"),
])  # fmt: skip
def test_the_cli_serves_with_the_head_limits(
    monkeypatch: pytest.MonkeyPatch, module: str, function: str, factory: str
) -> None:
    import importlib

    settings = Settings(http_head_timeout_s=7.5, http_max_head_bytes=4096)
    cli = importlib.import_module(module)
    seen = captured_run(monkeypatch)
    monkeypatch.setattr(cli, "get_settings", lambda: settings)
    getattr(cli, function)(host="127.0.0.1", port=1, workers=2, log_level="info")
    assert seen["app"] == factory
    protocol = seen["http"]
    assert protocol.func is HeadLimitsProtocol
    assert protocol.keywords == {"head_timeout_s": 7.5, "max_head_bytes": 4096}
    assert seen["timeout_keep_alive"] == 5
    assert pickle.loads(pickle.dumps(protocol)).keywords == protocol.keywords  # workers > 1 get it by pickle
    assert server_options(settings).keys() <= seen.keys()


def test_the_api_factory_bounds_body_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import api.main

    settings = Settings(http_body_timeout_s=4.0)
    monkeypatch.setattr(api.main, "get_settings", lambda: settings)
    monkeypatch.setattr(api.main, "tune_gc", lambda: None)
    app = api.main.build_app()
    [timeout] = [m for m in app.user_middleware if m.cls is BodyTimeout]
    assert timeout.kwargs["seconds"] == 4.0


def test_the_collector_app_bounds_body_time() -> None:
    from collector.app import create_app

    app = create_app(Settings(http_body_timeout_s=4.0))
    [timeout] = [m for m in app.user_middleware if m.cls is BodyTimeout]
    assert timeout.kwargs["seconds"] == 4.0
