"""Small HTML pages the redirector answers with when it does not redirect; every value is escaped."""

from __future__ import annotations

from html import escape
from typing import Final

CONTENT_TYPE: Final = "text/html; charset=utf-8"
# Pages load nothing but their own inline style; the preview page's image is for bots, which read
# the og:image URL instead of loading it, so no img-src is needed either.
CSP: Final = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"

_STYLE: Final = (
    "body{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;"
    "color:#222;line-height:1.5}h1{font-size:1.4rem}"
)


def _page(title: str, message: str, head: str = "") -> bytes:
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        '<meta name="robots" content="noindex,nofollow">'
        f"<title>{escape(title)}</title>{head}<style>{_STYLE}</style></head>"
        f"<body><h1>{escape(title)}</h1><p>{escape(message)}</p></body></html>\n"
    ).encode()


NOT_FOUND: Final = _page("Link not found", "This short link does not exist. Check it for typos.")
GONE: Final = _page("Link no longer available", "This short link has expired or reached its limit.")
BLOCKED: Final = _page(
    "Destination blocked",
    "This short link pointed at a site reported as unsafe (malware or phishing), so it was disabled "
    "for your protection. It will not take you there.",
)
REFUSED: Final = _page("Automated access refused", "This link does not serve automated clients.")


def preview_page(short_url: str, title: str | None, description: str | None, image: str | None) -> bytes:
    """Return a page carrying the link's Open Graph preview fields for link-preview bots (no redirect)."""
    title = title or "Shared link"
    meta = [
        ("og:type", "website"),
        ("og:title", title),
        ("og:url", short_url),
        ("twitter:card", "summary_large_image" if image else "summary"),
        ("twitter:title", title),
    ]
    if description:
        meta += [("og:description", description), ("twitter:description", description)]
    # Only absolute http(s) images: anything else ("javascript:", relative paths) is useless to a
    # preview bot and a needless thing to echo back.
    if image and image.lower().startswith(("https://", "http://")):
        meta += [("og:image", image), ("twitter:image", image)]
    head = "".join(
        f'<meta {"name" if key.startswith("twitter:") else "property"}="{key}" content="{escape(value)}">'
        for key, value in meta
    )
    if description:
        head += f'<meta name="description" content="{escape(description)}">'
    return _page(title, description or "", head)
