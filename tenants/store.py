"""Tenants in SQLite: created and changed by the CLI while collector and API processes read them."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import astuple, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from tenants.models import (
    CreatedTenant,
    DuplicateTenantError,
    RotatedKeys,
    Tenant,
    TenantError,
    TenantSettings,
    UnknownTenantError,
    check_given_key,
    hash_key,
    new_read_key,
    new_write_key,
    normalise_name,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tenants (
    tenant_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    write_key_sha256 TEXT NOT NULL UNIQUE,
    read_key_sha256 TEXT NOT NULL UNIQUE,
    allow_unknown_event_types INTEGER NOT NULL,
    events_per_second_limit INTEGER NOT NULL,
    user_events_per_minute_limit INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    allowed_origins TEXT NOT NULL DEFAULT '*'
) STRICT
"""
# Settings added after the first release, with the column each is kept in: a file created before them gets the
# column (and its default) when a store first opens it.
_ADDED_COLUMNS = {"allowed_origins": "allowed_origins TEXT NOT NULL DEFAULT '*'"}
_SETTINGS = tuple(f.name for f in fields(TenantSettings))
_COLUMNS = f"tenant_id, name, {', '.join(_SETTINGS)}, created_at"
_INSERTED = f"tenant_id, name, write_key_sha256, read_key_sha256, {', '.join(_SETTINGS)}, created_at, updated_at"


@dataclass(frozen=True)
class KeyIndex:
    """Every tenant by write-key hash and by read-key hash: one snapshot for KeyCache."""

    by_write_hash: dict[str, Tenant]
    by_read_hash: dict[str, Tenant]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _unknown(tenant_id: str) -> UnknownTenantError:
    return UnknownTenantError(f"no tenant {tenant_id!r}; `analytics tenants list` shows them")


def _tenant(row: tuple[Any, ...]) -> Tenant:
    """A row of _COLUMNS as a Tenant: SQLite's 0/1 as a bool, comma-separated origins as a tuple."""
    tenant_id, name, *values, created_at = row
    settings = dict(zip(_SETTINGS, values, strict=True))
    settings["allow_unknown_event_types"] = bool(settings["allow_unknown_event_types"])
    settings["allowed_origins"] = tuple(settings["allowed_origins"].split(","))
    return Tenant(tenant_id, name, TenantSettings(**settings), created_at)


def _stored(settings: TenantSettings) -> tuple[Any, ...]:
    """The settings as their columns hold them (in _SETTINGS order): origins as comma-separated text."""
    return tuple(",".join(v) if isinstance(v, tuple) else v for v in astuple(settings))


class TenantStore:
    """Tenants and their hashed keys in one SQLite file; safe to open from several processes at once."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            # WAL is a property of the file: readers (collector, API) never block on the CLI's writes.
            con.execute("PRAGMA journal_mode=WAL")
            con.execute(_SCHEMA)
        self._add_missing_columns()

    def _add_missing_columns(self) -> None:
        with self._connect() as con:
            if not set(_ADDED_COLUMNS) - self._column_names(con):
                return
        with self._write() as con:  # re-read under the write lock: another process may have added them meanwhile
            for name in _ADDED_COLUMNS.keys() - self._column_names(con):
                con.execute(f"ALTER TABLE tenants ADD COLUMN {_ADDED_COLUMNS[name]}")

    @staticmethod
    def _column_names(con: sqlite3.Connection) -> set[str]:
        return {row[1] for row in con.execute("PRAGMA table_info(tenants)")}

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # A connection per call: tenants change rarely and the hot path goes through KeyCache, so this keeps
        # the store safe to share between threads without a lock. Autocommit; writes open their own transaction.
        with closing(sqlite3.connect(self.path, timeout=10, isolation_level=None)) as con:
            con.execute("PRAGMA synchronous=NORMAL")  # durable enough in WAL mode, and no fsync per read
            yield con

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as con:
            # IMMEDIATE takes the write lock up front, so check-then-insert cannot race another writer.
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    def create(
        self, name: str, *, write_key: str | None = None, read_key: str | None = None, **settings: Any
    ) -> CreatedTenant:
        """A new tenant with generated keys (or the given ones); its id is the slug of its name."""
        name, tenant_id = normalise_name(name)
        tenant_settings = TenantSettings().with_changes(**settings)
        write_key = check_given_key(write_key, "write") if write_key is not None else new_write_key()
        read_key = check_given_key(read_key, "read") if read_key is not None else new_read_key()
        if write_key == read_key:
            raise TenantError("write key and read key must differ: the write key is public")
        write_hash, read_hash = hash_key(write_key), hash_key(read_key)
        now = _now()
        with self._write() as con:
            if con.execute("SELECT 1 FROM tenants WHERE tenant_id = ?", (tenant_id,)).fetchone():
                raise DuplicateTenantError(f"tenant {tenant_id!r} already exists (the name {name!r} maps to that id)")
            for which, digest in (("write", write_hash), ("read", read_hash)):
                query = "SELECT 1 FROM tenants WHERE write_key_sha256 = ? OR read_key_sha256 = ?"
                if con.execute(query, (digest, digest)).fetchone():
                    raise DuplicateTenantError(f"the given {which} key is already in use by another tenant")
            values = (tenant_id, name, write_hash, read_hash, *_stored(tenant_settings), now, now)
            con.execute(f"INSERT INTO tenants ({_INSERTED}) VALUES ({', '.join('?' * len(values))})", values)
        return CreatedTenant(tenant_id, name, write_key, read_key, tenant_settings)

    def _one(self, where: str, value: str, con: sqlite3.Connection | None = None) -> Tenant | None:
        if con is None:
            with self._connect() as own:
                return self._one(where, value, own)
        row = con.execute(f"SELECT {_COLUMNS} FROM tenants WHERE {where} = ?", (value,)).fetchone()
        return _tenant(row) if row else None

    def by_write_key(self, key: str) -> Tenant | None:
        """The tenant whose write key this is, or None."""
        return self._one("write_key_sha256", hash_key(key))

    def by_read_key(self, key: str) -> Tenant | None:
        """The tenant whose read key this is, or None."""
        return self._one("read_key_sha256", hash_key(key))

    def get(self, tenant_id: str) -> Tenant | None:
        """The tenant with this id, or None."""
        return self._one("tenant_id", tenant_id)

    def list(self) -> list[Tenant]:
        """Every tenant, ordered by id."""
        with self._connect() as con:
            return [_tenant(row) for row in con.execute(f"SELECT {_COLUMNS} FROM tenants ORDER BY tenant_id")]

    def key_index(self) -> KeyIndex:
        """All tenants keyed by their key hashes, read in one query."""
        with self._connect() as con:
            rows = con.execute(f"SELECT write_key_sha256, read_key_sha256, {_COLUMNS} FROM tenants").fetchall()
        by_write, by_read = {}, {}
        for write_hash, read_hash, *rest in rows:
            tenant = _tenant(tuple(rest))
            by_write[write_hash] = tenant
            by_read[read_hash] = tenant
        return KeyIndex(by_write, by_read)

    def rotate_keys(self, tenant_id: str, which: Literal["write", "read", "both"] = "both") -> RotatedKeys:
        """New generated keys for the tenant; the old ones stop working at once (in KeyCache within its ttl)."""
        if which not in ("write", "read", "both"):
            raise TenantError(f"which must be write, read or both, got {which!r}")
        write_key = new_write_key() if which in ("write", "both") else None
        read_key = new_read_key() if which in ("read", "both") else None
        with self._write() as con:
            for column, key in (("write_key_sha256", write_key), ("read_key_sha256", read_key)):
                if key is not None:
                    query = f"UPDATE tenants SET {column} = ?, updated_at = ? WHERE tenant_id = ?"
                    if con.execute(query, (hash_key(key), _now(), tenant_id)).rowcount == 0:
                        raise _unknown(tenant_id)
        return RotatedKeys(tenant_id, write_key, read_key)

    def update_settings(self, tenant_id: str, **changes: Any) -> Tenant:
        """Change some of the tenant's settings; returns the tenant as stored afterwards."""
        with self._write() as con:
            tenant = self._one("tenant_id", tenant_id, con)
            if tenant is None:
                raise _unknown(tenant_id)
            new = tenant.settings.with_changes(**changes)
            assignments = ", ".join(f"{name} = ?" for name in _SETTINGS)
            query = f"UPDATE tenants SET {assignments}, updated_at = ? WHERE tenant_id = ?"
            con.execute(query, (*_stored(new), _now(), tenant_id))
        return Tenant(tenant.tenant_id, tenant.name, new, tenant.created_at)

    def delete(self, tenant_id: str) -> None:
        """Remove the tenant and its keys; its events already stored are not touched."""
        with self._write() as con:
            if con.execute("DELETE FROM tenants WHERE tenant_id = ?", (tenant_id,)).rowcount == 0:
                raise _unknown(tenant_id)


def create_tenant_with_keys(
    store: TenantStore, tenant_id: str, write_key: str, read_key: str, **settings: Any
) -> CreatedTenant:
    """Register a tenant under an exact id with known keys (demos and tests: tenant_1 with write key tenant_1)."""
    if normalise_name(tenant_id)[1] != tenant_id:
        raise TenantError(f"{tenant_id!r} is not a valid tenant id: use lower-case letters, digits, '-' and '_'")
    return store.create(tenant_id, write_key=write_key, read_key=read_key, **settings)
