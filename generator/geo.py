"""Countries with a realistic traffic skew and IPv4 blocks that geolocate to them.

Every block below maps entirely to its country in iptocc (the collector's IP→country library) and
agrees with geoip2fast's MaxMind-derived data on a sample; tests/unit/test_generator.py re-checks
every generated address. Blocks are /16s of residential ISPs where one was found, so traffic looks
like end users rather than data centres. Bots come from cloud ranges, as crawlers do.
"""

from __future__ import annotations

import ipaddress

import numpy as np

# (ISO 3166-1 alpha-2, share of human traffic, /16 blocks)
COUNTRY_TABLE: tuple[tuple[str, float, tuple[str, ...]], ...] = (
    ("US", 0.30, ("73.0.0.0/16", "24.0.0.0/16", "98.200.0.0/16")),
    ("GB", 0.08, ("86.0.0.0/16", "2.96.0.0/16", "2.97.0.0/16")),
    ("DE", 0.08, ("84.128.0.0/16", "91.0.0.0/16", "2.160.0.0/16")),
    ("IN", 0.07, ("49.36.0.0/16", "117.192.0.0/16", "1.22.0.0/16")),
    ("FR", 0.06, ("2.3.0.0/16", "2.4.0.0/16", "2.5.0.0/16")),
    ("BR", 0.05, ("189.0.0.0/16", "139.82.0.0/16", "143.54.0.0/16")),
    ("CA", 0.05, ("24.114.0.0/16", "23.16.0.0/16", "23.17.0.0/16")),
    ("JP", 0.04, ("126.0.0.0/16", "1.33.0.0/16", "1.66.0.0/16")),
    ("AU", 0.03, ("1.40.0.0/16", "1.41.0.0/16", "1.42.0.0/16")),
    ("NL", 0.03, ("77.160.0.0/16", "24.132.0.0/16", "31.20.0.0/16")),
    ("ES", 0.03, ("2.136.0.0/16", "2.137.0.0/16", "2.138.0.0/16")),
    ("IT", 0.03, ("2.32.0.0/16", "2.33.0.0/16", "2.34.0.0/16")),
    ("MX", 0.03, ("187.140.0.0/16", "189.200.0.0/16", "131.178.0.0/16")),
    ("PL", 0.02, ("5.173.0.0/16", "5.184.0.0/16", "5.185.0.0/16")),
    ("SE", 0.02, ("2.64.0.0/16", "2.0.0.0/16", "2.1.0.0/16")),
    ("KR", 0.02, ("1.11.0.0/16", "1.16.0.0/16", "1.17.0.0/16")),
    ("TR", 0.02, ("5.24.0.0/16", "5.25.0.0/16", "5.26.0.0/16")),
    ("ID", 0.02, ("114.120.0.0/16", "36.64.0.0/16", "36.65.0.0/16")),
    ("ZA", 0.015, ("41.0.0.0/16", "41.1.0.0/16", "41.2.0.0/16")),
    ("SG", 0.015, ("116.86.0.0/16", "175.156.0.0/16", "118.189.0.0/16")),
)
BOT_COUNTRY = "US"
BOT_BLOCKS: tuple[str, ...] = ("54.0.0.0/16", "3.3.0.0/16")

COUNTRIES: tuple[str, ...] = tuple(row[0] for row in COUNTRY_TABLE)
_weights = np.array([row[1] for row in COUNTRY_TABLE])
COUNTRY_WEIGHTS: np.ndarray = _weights / _weights.sum()


def _bases(blocks: tuple[str, ...]) -> np.ndarray:
    nets = [ipaddress.IPv4Network(b) for b in blocks]
    if any(n.prefixlen != 16 for n in nets):
        raise ValueError("the IP tables hold /16 blocks only")
    return np.array([int(n.network_address) for n in nets], dtype=np.uint32)


_COUNTRY_BASES = [_bases(row[2]) for row in COUNTRY_TABLE]
_BOT_BASES = _bases(BOT_BLOCKS)


def _in_blocks(rng: np.random.Generator, bases: np.ndarray, n: int) -> np.ndarray:
    # Host parts 1..254 in the last octet: no .0 or .255, which look like network/broadcast addresses.
    block = bases[rng.integers(0, len(bases), n)]
    return block + rng.integers(0, 256, n, dtype=np.uint32) * 256 + rng.integers(1, 255, n, dtype=np.uint32)


def random_ips(rng: np.random.Generator, country: np.ndarray) -> np.ndarray:
    """One IPv4 address (as uint32) per entry of `country` (indexes into COUNTRIES), inside its blocks."""
    out = np.empty(len(country), dtype=np.uint32)
    for c, bases in enumerate(_COUNTRY_BASES):
        sel = np.flatnonzero(country == c)
        out[sel] = _in_blocks(rng, bases, len(sel))
    return out


def bot_ips(rng: np.random.Generator, n: int) -> np.ndarray:
    return _in_blocks(rng, _BOT_BASES, n)


def ip_text(ip: int) -> str:
    return f"{ip >> 24}.{(ip >> 16) & 255}.{(ip >> 8) & 255}.{ip & 255}"
