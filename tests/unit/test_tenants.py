"""Tenants and keys: hashed storage, authentication, rotation, the KeyCache's ttl, the CLI, and sharing one file."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from analytics_cli.main import app
from analytics_core.settings import Settings
from tenants import (
    DuplicateTenantError,
    KeyCache,
    TenantError,
    TenantSettings,
    TenantStore,
    UnknownTenantError,
    create_tenant_with_keys,
)
from tenants.models import normalise_name

runner = CliRunner()


@pytest.fixture()
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "tenants.sqlite"


@pytest.fixture()
def store(db: Path) -> TenantStore:
    return TenantStore(db)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def stored_bytes(db: Path) -> bytes:
    """The database file and its WAL and shared-memory siblings, where fresh writes live before a checkpoint."""
    return b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))


def test_created_keys_authenticate_and_wrong_keys_do_not(store: TenantStore) -> None:
    created = store.create("Acme Shop")
    assert created.tenant_id == "acme-shop"
    assert created.write_key.startswith("wk_") and created.read_key.startswith("rk_")
    assert created.settings == TenantSettings()
    by_write, by_read = store.by_write_key(created.write_key), store.by_read_key(created.read_key)
    assert by_write is not None and by_write.tenant_id == "acme-shop" and by_write.name == "Acme Shop"
    assert by_read == by_write
    assert store.by_write_key("wk_not-a-key") is None
    assert store.by_write_key(created.read_key) is None  # the secret key is not a write key, nor the reverse
    assert store.by_read_key(created.write_key) is None
    assert created.write_key not in repr(created) and created.read_key not in repr(created)


def test_keys_are_stored_only_as_hashes(store: TenantStore, db: Path) -> None:
    created = store.create("Acme Shop")
    tenant_1 = create_tenant_with_keys(store, "tenant_1", "tenant_1", "rk_tenant_1_secret")
    rotated = store.rotate_keys("acme-shop")
    data = stored_bytes(db)
    assert b"acme-shop" in data  # the scan does see the rows
    for key in (created.write_key, created.read_key, rotated.write_key, rotated.read_key, tenant_1.read_key):
        assert key is not None and key.encode() not in data


@pytest.mark.parametrize(
    ("name", "tenant_id"),
    [("Acme Shop", "acme-shop"), ("tenant_1", "tenant_1"), ("  Café Über!! ", "cafe-uber"), ("x", "x")],
)
def test_tenant_id_is_the_slug_of_the_name(name: str, tenant_id: str) -> None:
    assert normalise_name(name) == (name.strip(), tenant_id)


@pytest.mark.parametrize(("name", "message"), [("", "1 to 64"), ("a" * 65, "1 to 64"), ("!!!", "no letters")])
def test_bad_names_are_refused_clearly(store: TenantStore, name: str, message: str) -> None:
    with pytest.raises(TenantError, match=message):
        store.create(name)


def test_duplicate_name_is_refused(store: TenantStore) -> None:
    store.create("Acme Shop")
    with pytest.raises(DuplicateTenantError, match="already exists"):
        store.create("acme-shop")
    assert len(store.list()) == 1


def test_given_keys_are_checked(store: TenantStore) -> None:
    with pytest.raises(TenantError, match="8 to 256"):
        store.create("a", write_key="short")
    with pytest.raises(TenantError, match="may only contain"):
        store.create("a", write_key="has:colon")
    with pytest.raises(TenantError, match="must differ"):
        store.create("a", write_key="same-key-1", read_key="same-key-1")
    with pytest.raises(TenantError, match="not a valid tenant id"):
        create_tenant_with_keys(store, "Tenant 1", "tenant_1", "rk_secret_1")
    create_tenant_with_keys(store, "tenant_1", "tenant_1", "rk_secret_1")
    with pytest.raises(DuplicateTenantError, match="write key is already in use"):
        store.create("other", write_key="tenant_1")
    with pytest.raises(DuplicateTenantError, match="read key is already in use"):
        store.create("other", read_key="tenant_1")  # one tenant's public key must never be another's secret
    tenant = store.by_write_key("tenant_1")
    assert tenant is not None and tenant.tenant_id == "tenant_1"


def test_rotation_invalidates_only_the_rotated_key(store: TenantStore) -> None:
    created = store.create("Acme")
    rotated = store.rotate_keys("acme", "write")
    assert rotated.read_key is None and rotated.write_key is not None
    assert store.by_write_key(created.write_key) is None
    assert store.by_write_key(rotated.write_key) is not None
    assert store.by_read_key(created.read_key) is not None
    both = store.rotate_keys("acme")
    assert both.read_key is not None and store.by_read_key(both.read_key) is not None
    assert store.by_read_key(created.read_key) is None
    with pytest.raises(UnknownTenantError):
        store.rotate_keys("nope")


def test_settings_update_and_delete(store: TenantStore) -> None:
    store.create("Acme", allow_unknown_event_types=False, events_per_second_limit=50)
    updated = store.update_settings("acme", user_events_per_minute_limit=120)
    assert updated.settings == TenantSettings(False, 50, 120)
    assert store.get("acme") == updated
    with pytest.raises(TenantError, match="unknown tenant settings"):
        store.update_settings("acme", colour="blue")
    with pytest.raises(TenantError, match="positive integer"):
        store.update_settings("acme", events_per_second_limit=0)
    with pytest.raises(UnknownTenantError):
        store.update_settings("nope", events_per_second_limit=5)
    store.delete("acme")
    assert store.get("acme") is None and store.list() == []
    with pytest.raises(UnknownTenantError):
        store.delete("acme")


def test_key_cache_follows_the_store_within_its_ttl(store: TenantStore, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    cache = KeyCache(store, ttl_seconds=5, clock=clock)
    first = store.create("First")
    assert cache.tenant_for_write_key(first.write_key) is not None
    second = store.create("Second")
    clock.now += 4.9
    assert cache.tenant_for_write_key(second.write_key) is None  # not before the ttl
    clock.now += 0.2
    found = cache.tenant_for_read_key(second.read_key)
    assert found is not None and found.tenant_id == "second"  # and after it
    store.rotate_keys("first", "write")
    assert cache.tenant_for_write_key(first.write_key) is not None
    clock.now += 5
    assert cache.tenant_for_write_key(first.write_key) is None  # revoked key stops working

    def no_sqlite() -> None:
        raise AssertionError("KeyCache queried SQLite within its ttl")

    monkeypatch.setattr(store, "key_index", no_sqlite)
    for _ in range(1000):  # unknown keys too: a flood of bad keys stays in memory
        assert cache.tenant_for_write_key("wk_guess") is None
        assert cache.tenant_for_read_key(second.read_key) is not None


def test_two_stores_on_one_file_see_each_others_writes(db: Path) -> None:
    cli_side, collector_side = TenantStore(db), TenantStore(db)
    created = cli_side.create("Acme")
    assert collector_side.by_write_key(created.write_key) is not None
    collector_side.update_settings("acme", events_per_second_limit=7)
    tenant = cli_side.get("acme")
    assert tenant is not None and tenant.settings.events_per_second_limit == 7
    writer = sqlite3.connect(db, isolation_level=None)
    assert writer.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("DELETE FROM tenants")
    assert [t.tenant_id for t in collector_side.list()] == ["acme"]  # reads go on during a write, see committed rows
    writer.execute("COMMIT")
    assert collector_side.list() == []


def invoke(db: Path, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["tenants", "--db", str(db), *args])
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return result.exit_code, result.stdout, result.stderr


def test_cli_create_json_prints_exactly_the_three_keys(db: Path) -> None:
    code, out, _ = invoke(
        db, "create", "Acme Shop", "--json", "--reject-unknown-event-types", "--events-per-second", "9"
    )
    assert code == 0
    keys = json.loads(out)
    assert set(keys) == {"tenant_id", "write_key", "read_key"}
    tenant = TenantStore(db).by_write_key(keys["write_key"])
    assert tenant is not None and tenant.tenant_id == keys["tenant_id"] == "acme-shop"
    assert tenant.settings == TenantSettings(False, 9, 600)
    code, out, _ = invoke(db, "create", "tenant_1", "--write-key", "tenant_1", "--read-key", "rk_tenant_1", "--json")
    assert json.loads(out) == {"tenant_id": "tenant_1", "write_key": "tenant_1", "read_key": "rk_tenant_1"}


def test_cli_human_output_warns_and_list_hides_keys(db: Path) -> None:
    code, out, err = invoke(db, "create", "Acme")
    assert code == 0 and "wk_" in out and "rk_" in out and "shown only once" in err
    code, out, _ = invoke(db, "list")
    assert code == 0 and "acme" in out and "wk_" not in out and "rk_" not in out
    code, out, _ = invoke(db, "rotate", "acme", "--read", "--json")
    assert code == 0 and set(json.loads(out)) == {"tenant_id", "read_key"}
    code, out, _ = invoke(db, "set", "acme", "--user-events-per-minute", "30")
    assert code == 0 and "30 events/min" in out
    assert invoke(db, "delete", "acme", "--yes")[0] == 0
    assert TenantStore(db).list() == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["create", "acme"], "already exists"),
        (["create", "x" * 65], "1 to 64"),
        (["create", "other", "--write-key", "short"], "8 to 256"),
        (["rotate", "nope"], "no tenant 'nope'"),
        (["set", "nope", "--events-per-second", "3"], "no tenant 'nope'"),
        (["set", "acme"], "nothing to change"),
        (["delete", "acme"], "--yes"),
        (["delete", "nope", "--yes"], "no tenant 'nope'"),
    ],
)
def test_cli_errors_exit_2_with_a_clear_message(db: Path, args: list[str], message: str) -> None:
    TenantStore(db).create("Acme")
    code, _, err = invoke(db, *args)
    assert code == 2
    assert message in err


def test_cli_uses_the_settings_path_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "from-settings.sqlite"
    monkeypatch.setattr("tenants.cli.get_settings", lambda: Settings(tenants_db=db))
    assert runner.invoke(app, ["tenants", "create", "Acme"]).exit_code == 0
    assert [t.tenant_id for t in TenantStore(db).list()] == ["acme"]


def test_create_if_missing_is_idempotent(tmp_path: Path) -> None:
    from tenants.cli import app as tenants_app

    db = str(tmp_path / "t.sqlite")
    args = ["--db", db, "create", "tenant_1", "--write-key", "tenant_1", "--read-key", "rk_tenant_1", "--if-missing"]
    first = CliRunner().invoke(tenants_app, args)
    second = CliRunner().invoke(tenants_app, args)
    assert first.exit_code == 0 and second.exit_code == 0, second.output
    assert "exists already" in second.output
    assert TenantStore(tmp_path / "t.sqlite").by_write_key("tenant_1") is not None
    assert CliRunner().invoke(tenants_app, args[:-1]).exit_code == 2  # without the flag: refused


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("*", ("*",)),
        (["https://Shop.Example:443/"], ("https://shop.example",)),  # as browsers send Origin: no default port
        ("http://localhost:3000, https://shop.example,", ("http://localhost:3000", "https://shop.example")),
        (("http://[::1]:8080", "http://[::1]:8080"), ("http://[::1]:8080",)),
    ],
)
def test_allowed_origins_are_kept_as_browsers_send_them(given: object, kept: tuple[str, ...]) -> None:
    assert TenantSettings(allowed_origins=given).allowed_origins == kept


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("ftp://shop.example", "scheme://host"),
        ("https://shop.example/cart", "no path"),
        ("shop.example", "scheme://host"),
        ("https://user@shop.example", "scheme://host"),
        ("https://shop.example:99999", "scheme://host"),
        ("*, https://shop.example", "give it alone"),
        (" , ", "at least one origin"),
        (5, "list of origins"),
    ],
)
def test_bad_allowed_origins_are_refused_clearly(given: object, message: str) -> None:
    with pytest.raises(TenantError, match=re.escape(message)):
        TenantSettings(allowed_origins=given)


def test_allowed_origins_decide_which_pages_may_send() -> None:
    assert TenantSettings().allows_origin("https://anything.example")  # write keys are public: any by default
    shop = TenantSettings(allowed_origins="https://shop.example")
    assert shop.allows_origin("https://shop.example") and shop.allows_origin("HTTPS://SHOP.EXAMPLE")
    assert not shop.allows_origin("https://shop.example.evil.example")
    assert not shop.allows_origin("http://shop.example") and not shop.allows_origin("null")


def test_allowed_origins_are_stored_and_a_file_from_before_them_gets_the_default(db: Path) -> None:
    db.parent.mkdir(parents=True)
    old = sqlite3.connect(db)
    old.execute(
        "CREATE TABLE tenants (tenant_id TEXT PRIMARY KEY, name TEXT NOT NULL, write_key_sha256 TEXT NOT NULL UNIQUE, "
        "read_key_sha256 TEXT NOT NULL UNIQUE, allow_unknown_event_types INTEGER NOT NULL, events_per_second_limit "
        "INTEGER NOT NULL, user_events_per_minute_limit INTEGER NOT NULL, created_at TEXT NOT NULL, updated_at TEXT "
        "NOT NULL) STRICT"
    )
    old.execute("INSERT INTO tenants VALUES ('old', 'Old', 'w', 'r', 1, 5, 6, '2025-01-01', '2025-01-01')")
    old.commit()
    old.close()
    store, again = TenantStore(db), TenantStore(db)  # the second open finds the column there
    assert store.get("old") == again.get("old")
    tenant = store.get("old")
    assert tenant is not None and tenant.settings == TenantSettings(True, 5, 6, ("*",))
    updated = store.update_settings("old", allowed_origins="https://old.example")
    assert updated.settings.allowed_origins == ("https://old.example",) and store.get("old") == updated
    created = store.create("New", allowed_origins=["https://a.example", "https://b.example"])
    found = KeyCache(store).tenant_for_write_key(created.write_key)
    assert found is not None and found.settings.allowed_origins == ("https://a.example", "https://b.example")


def test_cli_sets_and_lists_allowed_origins(db: Path) -> None:
    code, out, _ = invoke(db, "create", "Acme", "--json", "--allowed-origins", "https://shop.example")
    assert code == 0
    tenant = TenantStore(db).by_write_key(json.loads(out)["write_key"])
    assert tenant is not None and tenant.settings.allowed_origins == ("https://shop.example",)
    code, out, _ = invoke(db, "set", "acme", "--allowed-origins", "https://shop.example,http://localhost:3000")
    assert code == 0 and "browsers from https://shop.example, http://localhost:3000" in out
    code, out, _ = invoke(db, "list", "--json")
    assert json.loads(out)[0]["settings"]["allowed_origins"] == ["https://shop.example", "http://localhost:3000"]
    code, out, _ = invoke(db, "set", "acme", "--allowed-origins", "*")
    assert code == 0 and "browsers from any origin" in out
    code, _, err = invoke(db, "set", "acme", "--allowed-origins", "https://shop.example/path")
    assert code == 2 and "no path" in err
