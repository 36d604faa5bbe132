"""Device enrichment: browser, OS, device family and type from the User-Agent (ua-parser with the
Rust resolver) and the Sec-CH-UA client hints, cached by (user agent, hints)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import ua_parser
from ua_parser import Domain

DEVICE_TYPES = frozenset({"desktop", "mobile", "tablet", "tv", "console", "bot", "other"})

# Built once: BestAvailableResolver is the ua-parser-rs resolver when that wheel is installed. No
# CachingResolver: parse_device below caches whole answers, hints included.
_PARSER = ua_parser.Parser(ua_parser.BestAvailableResolver(ua_parser.load_lazy_builtins()))

_TV = re.compile(
    r"SmartTV|SMART-TV|Smart TV|Tizen.+TV|Web0S|WebOS.+TV|NetCast|HbbTV|AppleTV|Apple TV|GoogleTV|"
    r"Android TV|AndroidTV|\bAFT[A-Z]|CrKey|Roku|BRAVIA|Viera|\bTV\b",
    re.IGNORECASE,
)
_CONSOLE = re.compile(r"PlayStation|Xbox|Nintendo", re.IGNORECASE)
_TABLET = re.compile(
    r"iPad|Tablet(?! PC)|Kindle|Silk/|PlayBook|\bTab\b|SM-T\d|SM-X\d|Nexus (7|9|10)\b", re.IGNORECASE
)
_MOBILE = re.compile(r"Mobi|iPhone|iPod|Windows Phone|IEMobile|BlackBerry|Opera Mini|KaiOS", re.IGNORECASE)
_DESKTOP_OS = frozenset(
    {
        "Windows",
        "Mac OS X",
        "Linux",
        "Ubuntu",
        "Chrome OS",
        "Fedora",
        "Debian",
        "FreeBSD",
        "OpenBSD",
        "NetBSD",
        "Solaris",
        "Mint",
        "Arch Linux",
        "Red Hat",
        "SUSE",
        "Gentoo",
        "CentOS",
        "Kubuntu",
    }
)
_MOBILE_OS = frozenset({"iOS", "Android", "Windows Phone", "BlackBerry OS", "KaiOS", "HarmonyOS", "Tizen"})

# Sec-CH-UA-Platform values (https://wicg.github.io/ua-client-hints/#sec-ch-ua-platform) mapped to
# the family names ua-parser uses, so the two sources agree in ClickHouse.
_CH_PLATFORM = {
    "windows": "Windows",
    "macos": "Mac OS X",
    "android": "Android",
    "ios": "iOS",
    "chrome os": "Chrome OS",
    "chromeos": "Chrome OS",
    "linux": "Linux",
    "fuchsia": "Fuchsia",
}
_CH_BRAND = re.compile(r'"([^"]*)"\s*;\s*v\s*=\s*"([^"]*)"')
# Brands that only say "Chromium inside": the specific brand (Google Chrome, Microsoft Edge) wins.
_GENERIC_BRANDS = frozenset({"chromium"})
_CH_BROWSER_NAMES = {"google chrome": "Chrome", "microsoft edge": "Edge", "opera": "Opera"}


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What the client runs: empty strings when unknown, device_type always one of DEVICE_TYPES."""

    browser: str = ""
    browser_version: str = ""
    os: str = ""
    os_version: str = ""
    device_family: str = ""
    device_type: str = "other"
    is_spider: bool = False


def _version(*parts: str | None) -> str:
    out: list[str] = []
    for part in parts:
        if not part:
            break
        out.append(part)
    return ".".join(out)


def _known(family: str | None) -> str:
    return "" if family in (None, "Other") else str(family)


def ch_brand(ch_ua: str | None) -> tuple[str, str] | None:
    """Return (browser, major version) named by a Sec-CH-UA header, ignoring GREASE brands."""
    if not ch_ua:
        return None
    brands = [(name.strip(), ver.strip()) for name, ver in _CH_BRAND.findall(ch_ua)]
    # GREASE brands ("Not A(Brand", "Not/A)Brand"...) exist to be ignored.
    real = [(n, v) for n, v in brands if n and not n.lower().startswith("not")]
    specific = [(n, v) for n, v in real if n.lower() not in _GENERIC_BRANDS]
    candidates = specific or real
    if not candidates:
        return None
    name, ver = candidates[0]
    return _CH_BROWSER_NAMES.get(name.lower(), name), ver


def _device_type(ua: str, os_family: str, device_family: str, is_spider: bool) -> str:
    if is_spider:
        return "bot"
    if _CONSOLE.search(ua):
        return "console"
    if _TV.search(ua):
        return "tv"
    if _TABLET.search(ua) or device_family.startswith(("iPad", "Kindle")):
        return "tablet"
    if os_family == "Mac OS X" and "Mobile/" in ua:
        # iPadOS Safari asks for desktop sites with a Mac UA but keeps the "Mobile/" build token.
        return "tablet"
    if os_family == "Android":
        # Android tablets drop the "Mobile" token (Google's guidance to tablet browsers).
        return "mobile" if "Mobile" in ua else "tablet"
    if _MOBILE.search(ua) or os_family in _MOBILE_OS:
        return "mobile"
    if os_family in _DESKTOP_OS:
        return "desktop"
    return "other"


@lru_cache(maxsize=32_768)
def parse_device(
    user_agent: str,
    ch_ua: str | None = None,
    ch_ua_mobile: str | None = None,
    ch_ua_platform: str | None = None,
) -> DeviceInfo:
    """Parse a User-Agent plus client hints into DeviceInfo; never raises, same input same answer."""
    if not user_agent and not (ch_ua or ch_ua_platform):
        return DeviceInfo()
    result = _PARSER(user_agent, Domain.ALL)
    ua_r, os_r, dev_r = result.user_agent, result.os, result.device
    browser = _known(ua_r.family) if ua_r else ""
    browser_version = _version(ua_r.major, ua_r.minor, ua_r.patch) if ua_r and browser else ""
    os_family = _known(os_r.family) if os_r else ""
    os_version = _version(os_r.major, os_r.minor, os_r.patch) if os_r and os_family else ""
    device_family = _known(dev_r.family) if dev_r else ""
    is_spider = device_family == "Spider"
    device_type = _device_type(user_agent, os_family, device_family, is_spider)

    # Hints come from the browser itself and are not frozen like the reduced UA string, so they
    # fill gaps and correct the platform; they never turn a parsed spider into a person.
    platform = _CH_PLATFORM.get((ch_ua_platform or "").strip().strip('"').lower())
    if platform and platform != os_family:
        os_family, os_version = platform, ""
    brand = ch_brand(ch_ua)
    if brand and not browser:
        browser, browser_version = brand
    mobile_hint = (ch_ua_mobile or "").strip()
    if not is_spider and mobile_hint == "?1":
        device_type = "mobile"
    elif not is_spider and mobile_hint == "?0" and device_type == "mobile":
        # "?0" from an Android browser means a tablet or desktop-mode browser, not a phone.
        device_type = "tablet" if os_family == "Android" else "desktop"
    elif device_type == "other" and platform:
        device_type = (
            "mobile" if platform in _MOBILE_OS else "desktop" if platform in _DESKTOP_OS else device_type
        )
    return DeviceInfo(browser, browser_version, os_family, os_version, device_family, device_type, is_spider)
