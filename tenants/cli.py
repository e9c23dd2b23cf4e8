"""The `analytics tenants` commands: create tenants, list them, rotate their keys, change settings, delete."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.table import Table

from analytics_core.settings import get_settings
from tenants.models import TenantError, TenantSettings, normalise_name
from tenants.store import TenantStore

app = typer.Typer(
    help="Tenants and their keys: a public write key for the collector, a secret read key for the query API. "
    "Keys are shown once at creation or rotation and stored only as hashes (ANALYTICS_TENANTS_DB).",
    no_args_is_help=True,
)

_DEFAULTS = TenantSettings()
AllowUnknown = typer.Option(
    "--allow-unknown-event-types/--reject-unknown-event-types",
    help="Accept events whose type has no registered schema, or send them to the dead-letter topic.",
)
EventsPerSecond = typer.Option("--events-per-second", min=1, help="The tenant's ingest rate limit (429 above it).")
UserEventsPerMinute = typer.Option(
    "--user-events-per-minute", min=1, help="Events a minute from one user above which the user is flagged as a bot."
)
AllowedOrigins = typer.Option(
    "--allowed-origins",
    help="Web pages whose browsers may send events, comma-separated origins (https://shop.example,"
    'http://localhost:3000), or "*" for any; others get 403.',
)
JsonOut = typer.Option("--json", help="Print JSON for scripts instead of the human-readable output.")


@app.callback()
def _options(
    ctx: typer.Context,
    db: Annotated[
        Path | None, typer.Option("--db", help="The tenants SQLite file; default ANALYTICS_TENANTS_DB.")
    ] = None,
) -> None:
    ctx.meta["tenants_db"] = db


def _store(ctx: typer.Context) -> TenantStore:
    return TenantStore(ctx.meta.get("tenants_db") or get_settings().tenants_db)


@contextmanager
def _clear_errors() -> Iterator[None]:
    """Refusals (duplicate name, unknown tenant, bad value) as one red line and exit code 2, no traceback."""
    try:
        yield
    except TenantError as err:
        Console(stderr=True).print(str(err), style="bold red", markup=False, highlight=False)
        raise typer.Exit(2) from None


def _print_keys(tenant_id: str, write_key: str | None, read_key: str | None) -> None:
    out = Console()
    if write_key is not None:
        out.print(f"write key  {write_key}   (public: SDKs send it to the collector)", highlight=False, soft_wrap=True)
    if read_key is not None:
        out.print(f"read key   {read_key}   (secret: for the query API)", highlight=False, soft_wrap=True)
    Console(stderr=True).print(
        f"These keys are shown only once and stored hashed: save them now. "
        f"`analytics tenants rotate {tenant_id}` issues new ones.",
        style="bold yellow",
        markup=False,
        highlight=False,
    )


def _describe(settings: TenantSettings) -> str:
    unknown = "accepted" if settings.allow_unknown_event_types else "rejected"
    return (
        f"unknown event types {unknown}, {settings.events_per_second_limit} events/s, "
        f"bot above {settings.user_events_per_minute_limit} events/min per user, "
        f"browsers from {_origins(settings)}"
    )


def _origins(settings: TenantSettings) -> str:
    return "any origin" if settings.allowed_origins == ("*",) else ", ".join(settings.allowed_origins)


@app.command()
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="1-64 characters; the tenant id is its slug (Acme Shop -> acme-shop).")],
    as_json: Annotated[bool, JsonOut] = False,
    allow_unknown_event_types: Annotated[bool, AllowUnknown] = _DEFAULTS.allow_unknown_event_types,
    events_per_second: Annotated[int, EventsPerSecond] = _DEFAULTS.events_per_second_limit,
    user_events_per_minute: Annotated[int, UserEventsPerMinute] = _DEFAULTS.user_events_per_minute_limit,
    allowed_origins: Annotated[str, AllowedOrigins] = ",".join(_DEFAULTS.allowed_origins),
    write_key: Annotated[str | None, typer.Option(help="Use this write key (8+ URL-safe characters).")] = None,
    read_key: Annotated[str | None, typer.Option(help="Use this read key (8+ URL-safe characters).")] = None,
    if_missing: Annotated[
        bool, typer.Option("--if-missing", help="Do nothing (exit 0) when the tenant exists; for scripts and demos.")
    ] = False,
) -> None:
    """Create a tenant and print its write and read keys (only this once).

    With --json prints exactly {"tenant_id", "write_key", "read_key"}. Exits 2 if the name is taken,
    unless --if-missing is given.
    """
    with _clear_errors():
        tenant_id = normalise_name(name)[1]
        if if_missing and _store(ctx).get(tenant_id) is not None:
            Console(stderr=True).print(f"tenant {tenant_id} exists already; left as it is", markup=False)
            return
        created = _store(ctx).create(
            name,
            write_key=write_key,
            read_key=read_key,
            allow_unknown_event_types=allow_unknown_event_types,
            events_per_second_limit=events_per_second,
            user_events_per_minute_limit=user_events_per_minute,
            allowed_origins=allowed_origins,
        )
    if as_json:
        keys = {"tenant_id": created.tenant_id, "write_key": created.write_key, "read_key": created.read_key}
        typer.echo(json.dumps(keys))
        return
    Console().print(f"created tenant {created.tenant_id} ({created.name})", style="green", markup=False)
    Console().print(_describe(created.settings), markup=False, highlight=False)
    _print_keys(created.tenant_id, created.write_key, created.read_key)


@app.command("list")
def list_tenants(ctx: typer.Context, as_json: Annotated[bool, JsonOut] = False) -> None:
    """List the tenants and their settings (never their keys)."""
    tenants = _store(ctx).list()
    if as_json:
        rows: list[dict[str, Any]] = [{**asdict(t), "settings": asdict(t.settings)} for t in tenants]
        typer.echo(json.dumps(rows))
        return
    if not tenants:
        Console().print("no tenants yet: `analytics tenants create NAME` adds one", markup=False)
        return
    table = Table(
        "tenant id", "name", "unknown event types", "events/s", "bot above events/min", "browser origins", "created"
    )
    for t in tenants:
        s = t.settings
        unknown = "accept" if s.allow_unknown_event_types else "reject"
        table.add_row(
            t.tenant_id,
            t.name,
            unknown,
            str(s.events_per_second_limit),
            str(s.user_events_per_minute_limit),
            _origins(s),
            t.created_at[:16].replace("T", " "),  # minutes are enough to tell tenants apart; full value in --json
        )
    Console().print(table)


@app.command()
def rotate(
    ctx: typer.Context,
    tenant: Annotated[str, typer.Argument(help="Tenant id.")],
    write: Annotated[bool, typer.Option("--write", help="Rotate only the write key.")] = False,
    read: Annotated[bool, typer.Option("--read", help="Rotate only the read key.")] = False,
    as_json: Annotated[bool, JsonOut] = False,
) -> None:
    """Issue new keys (both unless --write or --read); the old ones stop working within seconds."""
    which: Literal["write", "read", "both"] = (
        "write" if write and not read else "read" if read and not write else "both"
    )
    with _clear_errors():
        rotated = _store(ctx).rotate_keys(tenant, which)
    if as_json:
        keys = {k: v for k, v in asdict(rotated).items() if v is not None}
        typer.echo(json.dumps(keys))
        return
    _print_keys(rotated.tenant_id, rotated.write_key, rotated.read_key)


@app.command("set")
def set_settings(
    ctx: typer.Context,
    tenant: Annotated[str, typer.Argument(help="Tenant id.")],
    allow_unknown_event_types: Annotated[bool | None, AllowUnknown] = None,
    events_per_second: Annotated[int | None, EventsPerSecond] = None,
    user_events_per_minute: Annotated[int | None, UserEventsPerMinute] = None,
    allowed_origins: Annotated[str | None, AllowedOrigins] = None,
) -> None:
    """Change a tenant's settings; the collector applies them within seconds."""
    given = {
        "allow_unknown_event_types": allow_unknown_event_types,
        "events_per_second_limit": events_per_second,
        "user_events_per_minute_limit": user_events_per_minute,
        "allowed_origins": allowed_origins,
    }
    changes = {k: v for k, v in given.items() if v is not None}
    with _clear_errors():
        if not changes:
            raise TenantError("nothing to change: give at least one setting option (see --help)")
        updated = _store(ctx).update_settings(tenant, **changes)
    Console().print(f"{updated.tenant_id}: {_describe(updated.settings)}", markup=False, highlight=False)


@app.command()
def delete(
    ctx: typer.Context,
    tenant: Annotated[str, typer.Argument(help="Tenant id.")],
    yes: Annotated[bool, typer.Option("--yes", help="Confirm: the tenant's keys stop working.")] = False,
) -> None:
    """Delete a tenant and its keys (its stored events stay); needs --yes."""
    with _clear_errors():
        if not yes:
            raise TenantError(f"deleting {tenant!r} revokes its keys: add --yes to confirm")
        _store(ctx).delete(tenant)
    Console().print(f"deleted tenant {tenant}", markup=False)
