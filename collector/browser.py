"""What browser SDKs send and expect besides events: PostHog's body encodings, and the documents that configure
analytics.js (Segment's settings) and posthog-js (remote config, /decide/ and /flags/) to send here.

posthog-js encodes a body in one of three ways (its request.ts): gzip (`compression=gzip-js` in the query, or
nothing at all in recent releases: the body starts with gzip's magic bytes) sent as text/plain; a form
`data=<base64 of the JSON>` with `compression=base64` (its sendBeacon fallback, and older releases); or plain JSON.
Older releases also sent `data=<JSON>` forms. `posthog_document` undoes each of them; what is left is JSON.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any
from urllib.parse import parse_qs

import orjson
from fastapi import Request

from collector.body import BodyError, gunzip, parse_json

GZIP_MAGIC = b"\x1f\x8b"
GZIP_COMPRESSIONS = ("gzip", "gzip-js")
COMPRESSIONS = (*GZIP_COMPRESSIONS, "base64")
# host[:port] as a Host header may carry it: a name, IPv4 or a bracketed IPv6 address.
_HOST = re.compile(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


def posthog_document(body: bytes, request: Request) -> Any:
    """A PostHog body as its JSON document, whatever of posthog-js' encodings it came in (a Wire's decode)."""
    content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    limit: int = request.app.state.settings.collector_max_batch_bytes
    return decode_posthog(body, request.query_params.get("compression"), content_type, limit)


def decode_posthog(body: bytes, compression: str | None, content_type: str, limit: int) -> Any:
    """`body` gunzipped, taken out of its `data=` form field and out of base64 as it needs; then parsed as JSON."""
    compression = (compression or "").strip().lower() or None
    if compression is not None and compression not in COMPRESSIONS:
        raise BodyError(400, f"compression {compression!r} is not supported: send {', '.join(COMPRESSIONS)} or none")
    # By its bytes, not the query: recent posthog-js releases send gzip without saying so.
    if body.startswith(GZIP_MAGIC):
        body = gunzip(body, limit)
    if content_type == "application/x-www-form-urlencoded" or body.startswith(b"data="):
        body, compression = _form_data(body, compression)
        if body.lstrip()[:1] not in (b"{", b"["):  # a form's data is JSON or base64 of it
            compression = "base64"
    if compression == "base64":
        body = _base64(body)
    return parse_json(body)


def _form_data(body: bytes, compression: str | None) -> tuple[bytes, str | None]:
    """The `data` field of a form body (and the form's `compression`, which the query's may leave out)."""
    try:
        form = parse_qs(body.decode("ascii"), keep_blank_values=True)
    except UnicodeDecodeError:
        raise BodyError(400, "body: a form body must be URL-encoded ASCII (data=<JSON or base64 of it>)") from None
    if "data" not in form:
        raise BodyError(400, "body: a form body needs a data field (data=<JSON or base64 of it>)")
    form_compression = form.get("compression", [None])[0]
    return form["data"][0].encode(), compression or (form_compression.lower() if form_compression else None)


def _base64(data: bytes) -> bytes:
    # A form decoder turns an unescaped "+" into a space; base64 has no spaces, so they were pluses.
    text = data.strip().replace(b" ", b"+").replace(b"-", b"+").replace(b"_", b"/").rstrip(b"=")
    try:
        return base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise BodyError(400, "body: data is neither JSON nor base64 of JSON (compression=base64)") from None


def posthog_token(document: Any) -> str | None:
    """The project token (write key) of a /decide/ or /flags/ body: `token`, else `api_key`."""
    if not isinstance(document, dict):
        return None
    for name in ("token", "api_key"):
        value = document.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def api_host(request: Request) -> str | None:
    """This collector as the browser reached it, host[:port] from the Host header; None when that is not one."""
    host = request.headers.get("host", "")
    return host if _HOST.fullmatch(host) else None


def segment_settings(write_key: str, host: str, protocol: str) -> dict[str, Any]:
    """analytics.js' settings document (what cdn.segment.com serves at /v1/projects/<key>/settings), sending here.

    analytics-next posts each event to `{protocol}://{apiHost}/<t|p|i|g|a|s>` (`/b` when batching), so apiHost is
    host[:port], without Segment's /v1. No destinations, no middleware, and its own metrics off (sampleRate 0: they
    would go to apiHost's /m, which the collector does not take)."""
    return {
        "integrations": {
            "Segment.io": {
                "apiKey": write_key,
                "apiHost": host,
                "protocol": protocol,
                "unbundledIntegrations": [],
                "addBundledMetadata": True,
                "maybeBundledConfigIds": {},
            }
        },
        "plan": {"track": {"__default": {"enabled": True, "integrations": {}}}},
        "analyticsNextEnabled": True,
        "middlewareSettings": {},
        "enabledMiddleware": {},
        "metrics": {"sampleRate": 0},
        "legacyVideoPluginsEnabled": False,
        "remotePlugins": [],
        "edgeFunction": {},
    }


def posthog_config(token: str) -> dict[str, Any]:
    """posthog-js' remote config (/array/<token>/config): send events gzipped, and nothing the collector has not
    got: no feature flags (none loaded at start; identify() still asks /flags/, which has none), session
    recording, surveys, heatmaps, site apps or web vitals. Autocapture is left to the page's posthog.init options."""
    return {
        "token": token,
        "supportedCompression": list(GZIP_COMPRESSIONS),
        "hasFeatureFlags": False,
        "sessionRecording": False,
        "capturePerformance": False,
        "heatmaps": False,
        "surveys": False,
        "siteApps": [],
        "autocapture_opt_out": False,
        "autocaptureExceptions": False,
        "captureDeadClicks": False,
        "elementsChainAsString": True,
        "defaultIdentifiedOnly": True,
    }


def posthog_config_script(token: str) -> bytes:
    """posthog_config as the script posthog-js loads from /array/<token>/config.js: it sets
    window._POSTHOG_REMOTE_CONFIG[token] (the token is a known write key: URL-safe characters only)."""
    entry = orjson.dumps({"config": posthog_config(token), "siteApps": []})
    name = orjson.dumps(token)
    return b"(function(){var c=window._POSTHOG_REMOTE_CONFIG=window._POSTHOG_REMOTE_CONFIG||{};c[%s]=%s})();" % (
        name,
        entry,
    )


def posthog_flags(token: str) -> dict[str, Any]:
    """The /decide/ and /flags/ answer, for every version of both: no flags, and the remote config (older
    posthog-js releases read their config from /decide/; `config.enable_collect_everything` allows autocapture)."""
    return {
        **posthog_config(token),
        "flags": {},
        "featureFlags": {},
        "featureFlagPayloads": {},
        "errorsWhileComputingFlags": False,
        "quotaLimited": [],
        "config": {"enable_collect_everything": True},
        "toolbarParams": {},
        "editorParams": {},
        "isAuthenticated": False,
    }
