"""Redirector link-table memory and lookup speed with N realistic links (target <= 250 bytes/link).

Run: .venv/bin/python bench/link_memory.py [--links 1000000] [--seed 7]

Links are generated one at a time and dropped after upsert, so what tracemalloc sees growing is the
table alone. The mix (stated so the number can be judged):
- 85% random 12-char codes, 15% custom aliases of 6-24 chars;
- 80% on 3 shared short domains, 20% on 2,000 custom domains;
- link and workspace ids are UUIDv7 strings; 20,000 workspaces;
- destinations on 100,000 sites, 1-4 path segments, 40% with a query string, ~75 chars on average;
- 50% with utm params drawn from 5,000 campaigns; 10% expire, 3% capped, 2% routing rules,
  5% preview texts, 1% blocked.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import random
import resource
import string
import sys
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import uuid_utils

from clickwire.codes import new_code
from clickwire.links import Link, RoutingRule, RuleCondition
from services.redirector.decide import ready_answer
from services.redirector.table import ANSWERS_MAX, LinkTable

_WORD_TEXT = """
spring sale shoes running women men kids new arrivals blog post guide how to best deals product
category pricing docs api webinar event register signup landing summer winter offer free trial
download ebook case study careers about contact support help center release notes
"""
WORDS = _WORD_TEXT.split()


def _slug(rng: random.Random) -> str:
    return "-".join(rng.choices(WORDS, k=rng.randint(1, 4)))


def realistic_links(n: int, seed: int) -> Iterator[Link]:
    """Yield `n` links with the mix described in the module docstring."""
    rng = random.Random(seed)
    shared = ["clw.io", "go.clw.io", "l.clickwire.dev"]
    custom = [f"links.{rng.choice(WORDS)}{i}.com" for i in range(2_000)]
    sites = [
        f"https://{rng.choice(['www.', '', 'shop.', 'blog.'])}{rng.choice(WORDS)}{rng.choice(WORDS)}{i}."
        f"{rng.choice(['com', 'io', 'de', 'co.uk', 'net'])}"
        for i in range(100_000)
    ]
    workspaces = [str(uuid_utils.uuid7()) for _ in range(20_000)]
    campaigns = [
        (
            rng.choice(["newsletter", "twitter", "linkedin", "google", "facebook"]),
            rng.choice(["email", "social", "cpc", "referral"]),
            f"{_slug(rng)}-{i}",
        )
        for i in range(5_000)
    ]
    now = 1_760_000_000_000
    for _ in range(n):
        domain = rng.choice(shared) if rng.random() < 0.8 else rng.choice(custom)
        if rng.random() < 0.85:
            code = new_code()
        else:
            letters = rng.choices(string.ascii_lowercase + "-", k=rng.randint(6, 24))
            code = "".join(letters) + str(rng.randint(0, 99))
        path = "/" + "/".join(_slug(rng) for _ in range(rng.randint(1, 3)))
        if rng.random() < 0.3:
            path += f"/{rng.randint(1000, 99_999_999)}"
        query = f"?id={rng.randint(1, 10**6)}&ref={rng.choice(WORDS)}" if rng.random() < 0.4 else ""
        utm: dict[str, str | None] = {}
        if rng.random() < 0.5:
            source, medium, campaign = rng.choice(campaigns)
            utm = {"utm_source": source, "utm_medium": medium, "utm_campaign": campaign}
        rules: tuple[RoutingRule, ...] = ()
        if rng.random() < 0.02:
            rules = (RoutingRule((RuleCondition("os", "eq", ("ios",)),), "https://apps.apple.com/app/id123"),)
        preview = rng.random() < 0.05
        yield Link(
            id=str(uuid_utils.uuid7()),
            workspace_id=rng.choice(workspaces),
            domain=domain,
            code=code,
            destination=rng.choice(sites) + path + query,
            created_ms=now,
            updated_ms=now,
            redirect_type=rng.choice([301, 302, 302, 302, 307, 308]),
            expires_ms=now + 86_400_000 if rng.random() < 0.10 else None,
            max_clicks=1_000 if rng.random() < 0.03 else None,
            rules=rules,
            preview_title="Spring sale: everything 30% off" if preview else None,
            preview_description="Our biggest sale of the year." if preview else None,
            blocked=rng.random() < 0.01,
            **utm,  # type: ignore[arg-type]
        )


def _rss_bytes() -> int:
    """Current resident set size (Linux /proc), not the peak: freed generator garbage is excluded."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def main() -> None:
    """Build the table, print bytes/link (tracemalloc or RSS) and lookups/s."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--links", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--measure",
        choices=["rss", "tracemalloc"],
        default="rss",
        help="rss: resident-set growth, fast; tracemalloc: exact Python allocations, ~10x slower",
    )
    args = parser.parse_args()

    sample: list[tuple[str, str]] = []
    dest_chars = 0
    links = realistic_links(args.links, args.seed)
    first = next(links)  # build the generator's pools before measuring: they are not the table's
    gc.collect()
    if args.measure == "tracemalloc":
        tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0] if args.measure == "tracemalloc" else _rss_bytes()
    table = LinkTable()
    t0 = time.perf_counter()
    for i, link in enumerate(itertools.chain([first], links)):
        table.upsert(link)
        if i % 97 == 0:
            sample.append((link.domain, link.code))
            dest_chars += len(link.destination)
    build_s = time.perf_counter() - t0
    del first, link
    gc.collect()
    if args.measure == "tracemalloc":
        grown = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
    else:
        grown = _rss_bytes() - base
    # The sampled keys are the bench's, not the table's: the key strings are shared, the list is not.
    grown -= sys.getsizeof(sample) + sum(sys.getsizeof(k) for k in sample)

    keys = sample * max(1, 200_000 // len(sample))
    t0 = time.perf_counter()
    hits = sum(1 for d, c in keys if table.lookup(d, c) is not None)
    lookup_s = time.perf_counter() - t0
    assert hits == len(keys)

    # The ready-answer cache (plain links' precomputed redirects) is bounded, not per link: fill it
    # from the sample to its bound and measure it apart (tracemalloc, exact and quick at this size).
    gc.collect()
    tracemalloc.start()
    cache_base = tracemalloc.get_traced_memory()[0]
    for domain, code in sample:
        if len(table.answers) >= ANSWERS_MAX:
            break
        hot = table.lookup(domain, code)
        answer = ready_answer(hot, int(time.time() * 1000)) if hot is not None else None
        if answer is not None:
            table.remember(domain, code, answer)
        del hot, answer
    gc.collect()
    cache_bytes = tracemalloc.get_traced_memory()[0] - cache_base
    tracemalloc.stop()
    cached = len(table.answers)

    n = len(table)
    print(f"links                {n:,}")
    print(f"avg destination      {dest_chars / len(sample):.0f} chars before utm")
    print(f"bytes/link           {grown / n:.1f} ({args.measure}; target <= 250)")
    print(f"upserts/s            {n / build_s:,.0f} (including link generation)")
    print(f"answer cache         {cached:,} ready answers (bound {ANSWERS_MAX:,}), {cache_bytes / 2**20:.1f} MiB, "
          f"{cache_bytes / max(cached, 1):.0f} B each; not per link")
    ns = lookup_s / len(keys) * 1e9
    print(f"lookups/s            {len(keys) / lookup_s:,.0f} ({ns:.0f} ns each, random keys)")


if __name__ == "__main__":
    main()
