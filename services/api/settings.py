"""Settings of the control API (``clickwire api``): ``CLICKWIRE_API_*`` plus the common ones."""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from clickwire.destinations import DEFAULT_BLOCKLIST_PATH
from clickwire.settings import CommonSettings, Env, SettingsError

_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
# Lower-case ASCII host names, optionally with a port (clk.localhost:8080 in development).
_DOMAIN_RE = re.compile(rf"^(?=.{{1,253}}(:|$)){_LABEL}(\.{_LABEL})*(:\d{{1,5}})?$")


@dataclass(frozen=True)
class ApiSettings:
    """Everything ``clickwire api`` reads from the environment; every variable has a default."""

    common: CommonSettings
    host: str
    port: int
    default_domain: str
    domains: tuple[str, ...]
    max_body_bytes: int
    blocklist_path: Path
    blocklist_poll_s: float
    claim_timeout_s: float
    claim_grace_s: float
    instance_id: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ApiSettings:
        """Read the API settings; raises SettingsError naming the first bad variable."""
        env = Env(environ)
        default_domain = env.str("CLICKWIRE_API_DEFAULT_DOMAIN", "clk.localhost").lower()
        if not _DOMAIN_RE.match(default_domain):
            raise SettingsError("CLICKWIRE_API_DEFAULT_DOMAIN", default_domain, "a host name like clk.example.com")
        domains = tuple(d.lower() for d in env.list("CLICKWIRE_API_DOMAINS"))
        for d in domains:
            if not _DOMAIN_RE.match(d):
                raise SettingsError("CLICKWIRE_API_DOMAINS", ",".join(domains), "comma-separated host names")
        claim_timeout = env.float("CLICKWIRE_API_CLAIM_TIMEOUT", 10.0, lo=0.5)
        return cls(
            common=CommonSettings.from_env(environ),
            host=env.str("CLICKWIRE_API_HOST", "127.0.0.1"),
            port=env.int("CLICKWIRE_API_PORT", 8000, lo=0, hi=65535),
            default_domain=default_domain,
            # Empty means any well-formed domain may be used; set it to the domains the redirector serves.
            domains=domains,
            max_body_bytes=env.int("CLICKWIRE_API_MAX_BODY_BYTES", 2 * 1024 * 1024, lo=1024),
            blocklist_path=env.path("CLICKWIRE_API_BLOCKLIST", DEFAULT_BLOCKLIST_PATH),
            blocklist_poll_s=env.float("CLICKWIRE_API_BLOCKLIST_POLL", 1.0, lo=0.05),
            claim_timeout_s=claim_timeout,
            # A claim whose link never appeared is abandoned after this long (its API process died
            # between claiming and publishing); it must exceed the claim timeout by a wide margin.
            claim_grace_s=env.float("CLICKWIRE_API_CLAIM_GRACE", max(30.0, 3 * claim_timeout), lo=1.0),
            instance_id=env.optional_str("CLICKWIRE_API_INSTANCE_ID") or f"api-{secrets.token_hex(6)}",
        )

    def domain_allowed(self, domain: str) -> bool:
        """True when links may be created on this domain."""
        if not _DOMAIN_RE.match(domain):
            return False
        return not self.domains or domain in self.domains or domain == self.default_domain
