"""A second, plain-Python funnel engine, written from docs/FUNNELS.md ("Semantics"), not from the SQL.

It tries every candidate the rules describe directly (lists and loops over a user's events, no
window-function tricks), so that tests/unit/test_funnel_engine.py can compare the SQL of
dbt_project/macros/funnels.sql with it on random events and funnels. Slow by design; small inputs only.

Events are dicts with the staged columns (tenant_id, event_id, event_type, user_key, page, country,
device, library, currency, experiment_variant, properties as JSON text, is_bot) and `ts`, the
event's time in epoch microseconds. Times in entries are epoch microseconds too.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import numpy as np

from analytics_core.catalogue import get_catalogue
from analytics_core.funnels import Funnel, Step

DAY_US = 86_400_000_000


def field_value(event: dict[str, Any], name: str) -> str | None:
    """The event's value of a field as text; None when missing (a JSON null, object or array is missing too)."""
    if not name.startswith("properties."):
        return event.get(name)
    properties = json.loads(event.get("properties") or "{}")
    value = properties.get(name.removeprefix("properties."))
    if value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)  # strings as they are, numbers as the warehouse prints them (10, 1.5)


def matches(event: dict[str, Any], step: Step) -> bool:
    # `purchase` is any event type of the tenant's purchase mapping (the catalogue's).
    if event["event_type"] not in get_catalogue().purchases.expand((step.event_type,), event["tenant_id"]):
        return False
    for name, values in step.where.items():
        value = field_value(event, name)
        if value is None or value not in values:
            return False
    return True


def _key(event: dict[str, Any]) -> tuple[int, str]:
    return (event["ts"], event["event_id"])


def _attempt(funnel: Funnel, first: dict[str, Any], events: list[dict[str, Any]]) -> dict[str, Any]:
    """The steps one attempt reaches from the first-step event `first` (events: the user's, in order)."""
    window_end = first["ts"] + funnel.window * 1_000_000
    held = field_value(first, funnel.hold_constant) if funnel.hold_constant else None

    def eligible(event: dict[str, Any], step: Step) -> bool:
        if not matches(event, step) or event["ts"] > window_end:
            return False
        return funnel.hold_constant is None or (held is not None and field_value(event, funnel.hold_constant) == held)

    times = [first["ts"]]
    if funnel.order == "any":
        for step in funnel.steps[1:]:
            found = [e["ts"] for e in events if e is not first and e["ts"] >= first["ts"] and eligible(e, step)]
            if found:
                times.append(min(found))
        times = [times[0], *sorted(times[1:])]
    else:
        used = {id(first)}
        for step in funnel.steps[1:]:
            previous = times[-1]
            candidates = [e for e in events if id(e) not in used and e["ts"] >= previous and eligible(e, step)]
            if not candidates:
                break
            chosen = min(candidates, key=_key)
            if funnel.order == "strict" and any(previous < e["ts"] < chosen["ts"] for e in events):
                break
            used.add(id(chosen))
            times.append(chosen["ts"])
    depth = len(times)

    excluded = False
    for exclusion in funnel.exclusions:
        i, j = funnel.exclusion_span(exclusion)
        if depth < i:
            continue
        after = times[i - 1]
        for event in events:
            if not matches(event, exclusion):
                continue
            if depth >= j and after < event["ts"] < times[j - 1]:
                excluded = True
            if depth < j and after < event["ts"] <= window_end:
                excluded = True
    return {"first": first, "times": times, "depth": depth, "excluded": excluded, "window_end": window_end}


def entries(
    events: list[dict[str, Any]],
    funnel: Funnel,
    start_us: int,
    end_us: int,
    as_of_us: int,
    breakdowns: list[str] | None = None,
) -> list[dict[str, Any]]:
    """One dict per tenant, cohort day and user, sorted by them (the columns of the funnel_entries macro)."""
    columns = list(funnel.breakdowns if breakdowns is None else breakdowns)
    n = len(funnel.steps)
    last_us = end_us + funnel.window * 1_000_000
    by_user: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        if not event.get("is_bot") and event.get("user_key") is not None and start_us <= event["ts"] <= last_us:
            by_user[(event["tenant_id"], event["user_key"])].append(event)

    out = []
    for (tenant, user), stream in sorted(by_user.items()):
        stream.sort(key=_key)
        days: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for event in stream:
            if start_us <= event["ts"] < end_us and matches(event, funnel.steps[0]):
                days[event["ts"] // DAY_US].append(_attempt(funnel, event, stream))
        for day, attempts in sorted(days.items()):
            valid = [a for a in attempts if not a["excluded"]]
            pool = valid or attempts
            # the deepest; among equally deep ones, the latest start (then the last event in order)
            chosen = max(pool, key=lambda a: (a["depth"], _key(a["first"])))
            if not valid:
                status = "excluded"
            elif chosen["depth"] == n:
                status = "converted"
            elif any(a["window_end"] > as_of_us for a in valid):
                status = "pending"
            else:
                status = "dropped"
            times = chosen["times"] + [None] * (n - chosen["depth"])
            out.append(
                {
                    "tenant_id": tenant,
                    "cohort_day": day,
                    "user_key": user,
                    "started_at": chosen["first"]["ts"],
                    **{column: chosen["first"].get(column) for column in columns},
                    "depth": chosen["depth"],
                    **{f"step_{k}_at": times[k - 1] for k in range(1, n + 1)},
                    "status": status,
                    "excluded": not valid,
                }
            )
    return sorted(out, key=lambda row: (row["tenant_id"], row["cohort_day"], row["user_key"]))


def summary(
    rows: list[dict[str, Any]], funnel: Funnel, breakdowns: list[str] | None = None, by_day: bool = True
) -> list[dict[str, Any]]:
    """The funnel_summary macro's rows from `entries`, sorted by tenant, day and breakdown values."""
    columns = list(funnel.breakdowns if breakdowns is None else breakdowns)
    keys = ["tenant_id", *(["cohort_day"] if by_day else []), *columns]
    n = len(funnel.steps)
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[tuple(row[k] for k in keys)].append(row)
    out = []
    for group, members in sorted(groups.items(), key=lambda item: [(v is None, v or "") for v in item[0]]):
        counted = [r for r in members if not r["excluded"]]
        pending = [r for r in counted if r["status"] == "pending"]
        result: dict[str, Any] = dict(zip(keys, group, strict=True))
        result["entered"] = len(counted)
        for k in range(1, n + 1):
            result[f"reached_{k}"] = sum(1 for r in counted if r["depth"] >= k)
        result["pending"] = len(pending)
        for k in range(1, n):
            result[f"pending_at_{k}"] = sum(1 for r in pending if r["depth"] == k)
        result["excluded"] = len(members) - len(counted)
        for name, q in (("median", 0.5), ("p90", 0.9)):
            for k in range(2, n + 1):
                seconds = [(r[f"step_{k}_at"] - r[f"step_{k - 1}_at"]) / 1e6 for r in counted if r["depth"] >= k]
                result[f"{name}_s_{k}"] = float(np.quantile(seconds, q)) if seconds else None
        out.append(result)
    return out
