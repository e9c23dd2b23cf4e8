"""Tenants, their settings and keys: the value types and the rules for names and keys."""

from __future__ import annotations

import hashlib
import re
import secrets
import unicodedata
from dataclasses import dataclass, field, fields, replace
from typing import Any
from urllib.parse import urlsplit

NAME_MAX_CHARS = 64
KEY_MIN_CHARS = 8
KEY_MAX_CHARS = 256
# URL-unreserved characters only: SDKs send the write key as the Basic-auth user name (where a ':' would
# end it) or in a JSON body, and token_urlsafe never produces anything else.
_KEY_CHARS = re.compile(r"[A-Za-z0-9._~-]+")
ANY_ORIGIN = "*"
_HOST = re.compile(r"[a-z0-9.-]+|\[[0-9a-f:.]+\]")


class TenantError(ValueError):
    """A refused tenant operation; the message is safe to show and never contains a key."""


class UnknownTenantError(TenantError):
    """No tenant has that id."""


class DuplicateTenantError(TenantError):
    """A tenant with that id (or a key already in use) exists."""


@dataclass(frozen=True)
class TenantSettings:
    """Per-tenant behaviour of the collector, stored with the tenant."""

    allow_unknown_event_types: bool = True
    events_per_second_limit: int = 10_000
    # Above this many events a minute from one user_id, the collector flags the user as a bot.
    user_events_per_minute_limit: int = 600
    # Web pages (origins, scheme://host[:port]) whose browsers may send events; "*": any (write keys are public).
    allowed_origins: tuple[str, ...] = (ANY_ORIGIN,)

    def __post_init__(self) -> None:
        if not isinstance(self.allow_unknown_event_types, bool):
            raise TenantError(
                f"allow_unknown_event_types must be true or false, got {self.allow_unknown_event_types!r}"
            )
        for name in ("events_per_second_limit", "user_events_per_minute_limit"):
            value = getattr(self, name)
            # bool is an int subclass; True as a limit is a caller's mistake, not "1".
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TenantError(f"{name} must be a positive integer, got {value!r}")
        object.__setattr__(self, "allowed_origins", normalise_origins(self.allowed_origins))

    def allows_origin(self, origin: str) -> bool:
        """Whether a browser page of `origin` (its Origin header) may send events with the tenant's write key."""
        return self.allowed_origins == (ANY_ORIGIN,) or origin.lower() in self.allowed_origins

    def with_changes(self, **changes: Any) -> TenantSettings:
        """A copy with the named settings changed; unknown names are refused."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise TenantError(f"unknown tenant settings {unknown}; known: {sorted(known)}")
        return replace(self, **changes)


@dataclass(frozen=True)
class Tenant:
    """A tenant as the collector and the API see it: no keys, only who it is and how it behaves."""

    tenant_id: str
    name: str
    settings: TenantSettings
    created_at: str


@dataclass(frozen=True)
class CreatedTenant:
    """A new tenant with its keys in clear, the only time they exist outside the caller's hands."""

    tenant_id: str
    name: str
    # repr=False: a stray log line or traceback with this object must not leak the keys.
    write_key: str = field(repr=False)
    read_key: str = field(repr=False)
    settings: TenantSettings


@dataclass(frozen=True)
class RotatedKeys:
    """The new keys of a rotation; None for a key that was kept."""

    tenant_id: str
    write_key: str | None = field(default=None, repr=False)
    read_key: str | None = field(default=None, repr=False)


def normalise_name(name: str) -> tuple[str, str]:
    """The trimmed name and the tenant id derived from it ("Acme Shop" -> "acme-shop")."""
    name = name.strip()
    if not 1 <= len(name) <= NAME_MAX_CHARS:
        raise TenantError(f"tenant name must be 1 to {NAME_MAX_CHARS} characters, got {len(name)}")
    if any(unicodedata.category(c).startswith("C") for c in name):
        raise TenantError("tenant name must not contain control characters")
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    # Underscores survive so the generator's ids (tenant_1) are their own slugs.
    tenant_id = re.sub(r"[^a-z0-9_]+", "-", ascii_name.lower()).strip("-_")
    if not tenant_id:
        raise TenantError(f"tenant name {name!r} has no letters or digits to build an id from")
    return name, tenant_id


def normalise_origins(origins: Any) -> tuple[str, ...]:
    """Origins as the tenant setting keeps them: "*" alone, or distinct lower-case scheme://host[:port] values.

    Text is split at commas ("https://a.example, https://b.example"), as the CLI takes it."""
    if isinstance(origins, str):
        origins = origins.split(",")
    if not isinstance(origins, list | tuple) or not all(isinstance(o, str) for o in origins):
        raise TenantError(f"allowed_origins must be a list of origins, got {origins!r}")
    out = tuple(dict.fromkeys(_origin(o) for o in origins if o.strip()))
    if not out:
        raise TenantError('allowed_origins must name at least one origin, or "*" for any')
    if ANY_ORIGIN in out and len(out) > 1:
        raise TenantError('allowed_origins: "*" allows every origin, so give it alone')
    return out


def _origin(text: str) -> str:
    """One origin as a browser sends it in its Origin header: https://shop.example, http://localhost:3000."""
    text = text.strip().lower()
    if text == ANY_ORIGIN:
        return text
    rule = 'must be "*" or scheme://host[:port] (http or https, no path), e.g. https://shop.example'
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise TenantError(f"allowed origin {text!r} {rule}") from None
    host = parts.netloc.rsplit(":", 1)[0] if port is not None else parts.netloc
    if parts.scheme not in ("http", "https") or not _HOST.fullmatch(host) or parts.path not in ("", "/"):
        raise TenantError(f"allowed origin {text!r} {rule}")
    if parts.query or parts.fragment or "@" in parts.netloc:
        raise TenantError(f"allowed origin {text!r} {rule}")
    default = {"http": 80, "https": 443}[parts.scheme]
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None and port != default else "")


def hash_key(key: str) -> str:
    """SHA-256 hex of a key, the only form in which keys are stored or compared."""
    # A plain fast hash is right here, unlike for passwords: generated keys carry 192+ bits of entropy, so
    # brute-forcing a stolen hash is infeasible without a slow KDF, and the hash must be cheap because the
    # collector computes it on every request. Lookup by hash also makes timing attacks on the comparison moot.
    return hashlib.sha256(key.encode()).hexdigest()


def new_write_key() -> str:
    """A fresh public write key (the collector's; SDKs embed it in apps and pages)."""
    return "wk_" + secrets.token_urlsafe(24)


def new_read_key() -> str:
    """A fresh secret read key (the query API's)."""
    return "rk_" + secrets.token_urlsafe(32)


def check_given_key(key: str, which: str) -> str:
    """A caller-chosen key, refused unless long enough and made of URL-safe characters."""
    if not KEY_MIN_CHARS <= len(key) <= KEY_MAX_CHARS:
        raise TenantError(f"{which} key must be {KEY_MIN_CHARS} to {KEY_MAX_CHARS} characters, got {len(key)}")
    if not _KEY_CHARS.fullmatch(key):
        raise TenantError(f"{which} key may only contain letters, digits and . _ ~ -")
    return key
