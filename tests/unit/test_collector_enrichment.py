"""Enrichment: IP → country (iptocc as the reference), user agent → device class and bot flag, skew correction."""

from __future__ import annotations

import re

import pytest
from crawlerdetect import CrawlerDetect
from crawlerdetect.providers.crawlers import data as crawler_patterns
from iptocc import country_code

from collector.enrichment import (
    MAX_FUTURE_US,
    check_not_future,
    classify,
    country,
    event_time,
    is_crawler,
    user_agent,
)
from collector.validation import Rejected
from generator.population import USER_AGENTS

SECOND = 1_000_000
CHROME_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
)
IPHONE_SAFARI = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Mobile/15E148 Safari/604.1"
)
IPAD = (
    "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Mobile/15E148 Safari/604.1"
)
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("8.8.8.8", "US"),  # Google DNS
        ("81.2.69.142", "GB"),
        ("193.0.6.139", "NL"),  # RIPE NCC
        ("133.242.0.3", "JP"),
        ("200.160.2.3", "BR"),  # NIC.br
        ("2001:4860:4860::8888", "US"),
        ("98.200.221.23", "US"),  # the generator's example
    ],
)
def test_public_ips_get_the_country_iptocc_gives(ip: str, expected: str) -> None:
    assert country(ip) == country_code(ip) == expected  # iptocc is the reference, pinned like the generator's


@pytest.mark.parametrize(
    "ip", ["127.0.0.1", "10.1.2.3", "192.168.0.10", "172.16.5.4", "100.64.0.1", "::1", "fe80::1", "240.0.0.1"]
)
def test_private_loopback_and_reserved_ips_have_no_country(ip: str) -> None:
    assert country(ip) is None


@pytest.mark.parametrize("ip", [None, "", "not-an-ip", "999.1.1.1"])
def test_missing_or_broken_ips_have_no_country(ip: str | None) -> None:
    assert country(ip) is None


@pytest.mark.parametrize(
    ("agent", "device", "browser", "os"),
    [
        (CHROME_WINDOWS, "desktop", "Chrome", "Windows"),
        (IPHONE_SAFARI, "mobile", "Mobile Safari", "iOS"),
        (IPAD, "tablet", "Mobile Safari", "iOS"),
        (USER_AGENTS[1][1], "mobile", "Chrome Mobile", "Android"),  # Pixel 8
        (USER_AGENTS[2][1], "tablet", "Chrome", "Android"),  # Android tablet: no "Mobile" token
        (USER_AGENTS[0][1], "desktop", "Safari", "Mac OS X"),
    ],
)
def test_user_agent_device_class_browser_and_os(agent: str, device: str, browser: str, os: str) -> None:
    info = user_agent(agent)
    assert (info.device, info.browser, info.os, info.is_bot) == (device, browser, os, False)


@pytest.mark.parametrize(
    "agent",
    [
        GOOGLEBOT,
        *USER_AGENTS[3],
        "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
        "curl/8.4.0",
        "python-requests/2.31.0",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0 Safari/537.36",
    ],
)
def test_crawlers_are_bots(agent: str) -> None:
    info = user_agent(agent)
    assert info.is_bot and info.device == "bot"


def test_generator_devices_are_recovered_from_their_user_agents() -> None:
    for device, agents in zip(("desktop", "mobile", "tablet", "bot"), USER_AGENTS, strict=True):
        assert {classify(a).device for a in agents} == {device}


def test_no_user_agent_is_no_device_and_not_a_bot() -> None:
    for agent in (None, ""):
        info = classify(agent)
        assert (info.device, info.is_bot) == (None, False)


def test_user_agents_are_parsed_once() -> None:
    user_agent.cache_clear()
    for _ in range(5):
        user_agent(CHROME_WINDOWS)
    assert user_agent.cache_info().hits == 4


@pytest.mark.parametrize(
    ("original", "sent", "received", "expected"),
    [
        (100 * SECOND, 101 * SECOND, 200 * SECOND, 199 * SECOND),  # 1 s before sending, clock right
        (1_000 * SECOND, 1_001 * SECOND, 200 * SECOND, 199 * SECOND),  # clock 800 s fast: same answer
        (50 * SECOND, 51 * SECOND, 200 * SECOND, 199 * SECOND),  # clock 150 s slow: same answer
        (100 * SECOND, None, 200 * SECOND, 100 * SECOND),  # no sentAt: the time as sent
        (None, 101 * SECOND, 200 * SECOND, 200 * SECOND),  # no timestamp: receipt time
        (None, None, 200 * SECOND, 200 * SECOND),
        (1_704_067_200_000_000, 1_704_067_203_600_000, 1_704_067_205_000_000, 1_704_067_201_400_000),
    ],
)
def test_skew_correction(original: int | None, sent: int | None, received: int, expected: int) -> None:
    assert event_time(original, sent, received) == expected


def test_future_limit_is_24_hours_after_receipt() -> None:
    check_not_future(1_000 + MAX_FUTURE_US, 1_000)
    with pytest.raises(Rejected) as err:
        check_not_future(1_001 + MAX_FUTURE_US, 1_000)
    assert (err.value.reason, err.value.detail) == ("enrichment_failure", "timestamp: more than 24 h after receivedAt")


def test_re2_crawler_matching_agrees_with_crawlerdetect() -> None:
    """is_crawler runs crawlerdetect's patterns in RE2; it must give crawlerdetect's own answers."""
    reference = CrawlerDetect()
    literals = [p for p in crawler_patterns if re.fullmatch(r"[A-Za-z0-9 _\-]+", p)]
    assert len(literals) > 1000
    agents = [a for group in USER_AGENTS for a in group]
    agents += [
        "YandexSearch/1.0",
        "YandexBot/3.0",
        "Mozilla/5.0 (Linux; Android 10; K) Chrome/115.0 Mobile Safari/537.36",
    ]
    for literal in literals:
        agents += [f"Mozilla/5.0 (compatible; {literal}/1.0)", literal.lower()]
    assert [is_crawler(a) for a in agents] == [reference.is_crawler(a) for a in agents]
