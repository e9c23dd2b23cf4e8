"""Service logs (collector, query API) are JSON lines with the fields passed as extra."""

from __future__ import annotations

import json
import logging

from analytics_core.logs import JsonFormatter, log_config


def test_json_line_with_extras_and_exception() -> None:
    record = logging.makeLogRecord({"name": "collector", "levelname": "WARNING", "msg": "refused %s", "args": (503,)})
    record.status = 503
    entry = json.loads(JsonFormatter().format(record))
    assert entry["msg"] == "refused 503"
    assert entry["level"] == "warning" and entry["logger"] == "collector" and entry["status"] == 503
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    assert "ValueError: boom" in json.loads(JsonFormatter().format(record))["exc"]


def test_log_config_is_accepted_by_logging() -> None:
    import logging.config

    logging.config.dictConfig(log_config("warning"))
    assert logging.getLogger().level == logging.WARNING
    logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})
