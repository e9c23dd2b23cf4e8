"""Promoted columns: values copied out of properties and context into canonical event fields."""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urlsplit

from analytics_core.bounds import Bounds
from collector.adapters import EXPERIMENT
from collector.validation import Rejected

_DEFAULT_BOUNDS = Bounds()


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def page(msg: dict[str, Any], props: dict[str, Any], context: dict[str, Any]) -> str | None:
    """context.page.path, else properties.path, else the path of properties.url / context.page.url, else name."""
    ctx_page = context.get("page")
    ctx_page = ctx_page if isinstance(ctx_page, dict) else {}
    path = _text(ctx_page.get("path")) or _text(props.get("path"))
    if path is not None:
        return path
    url = _text(props.get("url")) or _text(ctx_page.get("url"))
    if url is not None:
        try:
            path = urlsplit(url).path or None
        except ValueError:  # e.g. an unclosed IPv6 bracket: not worth a dead letter
            path = None
        if path is not None:
            return path
    return _text(msg.get("name"))


def revenue(
    props: dict[str, Any], bounds: Bounds = _DEFAULT_BOUNDS, keys: tuple[str, ...] = ("revenue", "total")
) -> float | None:
    """The first of properties.<keys> that is not null (the purchase mapping's revenue_properties: revenue,
    else total, by default), when it is a number; NaN, infinity and amounts beyond the bounds
    (analytics_core/bounds.py) are rejected as out_of_range."""
    value, key = None, keys[0]
    for key in keys:
        value = props.get(key)
        if value is not None:
            break
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        amount = float(value)
    except OverflowError:  # an integer beyond a double's range
        amount = math.inf if value > 0 else -math.inf
    if not -bounds.max_abs_revenue <= amount <= bounds.max_abs_revenue:  # NaN fails this too
        raise Rejected("out_of_range", f"properties.{key}", bounds.revenue_rule(amount) or "is out of range")
    return amount


def currency(props: dict[str, Any]) -> str | None:
    value = props.get("currency")
    return value.upper() if isinstance(value, str) and value else None


def currency_code(value: str) -> str:
    """A currency code as ISO 4217 writes it: " usd" → "USD" (the schemas then check the three letters)."""
    return value.strip().upper()


def experiment(msg: dict[str, Any], props: dict[str, Any]) -> tuple[str | None, str | None]:
    """properties.experiment_key/_variant, else a PostHog $feature/<flag> variant found by the adapter."""
    key = _text(props.get("experiment_key"))
    if key is not None:
        return key, _text(props.get("experiment_variant"))
    flag = msg.get(EXPERIMENT)
    return flag if isinstance(flag, tuple) else (None, None)


def library(context: dict[str, Any]) -> str | None:
    """'name/version' of context.library (version may be empty, as the generator writes it)."""
    lib = context.get("library")
    if not isinstance(lib, dict):
        return None
    name = _text(lib.get("name"))
    if name is None:
        return None
    version = lib.get("version")
    if type(version) is str:  # the usual case, without the union isinstance below
        return f"{name}/{version}"
    return f"{name}/{version if isinstance(version, str | int | float) and not isinstance(version, bool) else ''}"


def ip(context: dict[str, Any], connection_ip: str | None) -> str | None:
    return _text(context.get("ip")) or connection_ip


def user_agent(context: dict[str, Any]) -> str | None:
    return _text(context.get("userAgent"))


def stored_properties(mtype: str, msg: dict[str, Any], props: dict[str, Any], traits: dict[str, Any]) -> dict[str, Any]:
    """What `properties` holds per message type: identify/group/alias keep their own fields, nested."""
    if mtype == "identify":
        return {"traits": traits}
    if mtype == "group":
        return {"group_id": str(msg.get("groupId")), "traits": traits}
    if mtype == "alias":
        return {"previous_id": str(msg.get("previousId"))}
    name = _text(msg.get("name"))
    if name is not None and mtype in ("page", "screen") and "name" not in props:
        return {**props, "name": name}
    return props
