"""The lexical half of the read-only guard for analyst SQL (the engine's readonly=1 is the other half).

The check looks only at SQL outside string literals, quoted identifiers and comments, so a
`WHERE user_agent LIKE '%;%'` passes while `SELECT 1; DROP TABLE x` does not.
"""

from __future__ import annotations

import re

from clickwire.clickhouse.store import ReadOnlyViolation

READ_KEYWORDS = frozenset({"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS"})

# A quoted token (with backslash or doubled-quote escapes) or a comment; group 1 marks quoted ones.
_SKIPPED = re.compile(
    r"""('(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.|"")*"|`(?:[^`\\]|\\.|``)*`)"""
    r"""|--[^\n]*|\#[ !][^\n]*|/\*.*?\*/""",
    re.DOTALL,
)
_FIRST_WORD = re.compile(r"\s*\(*\s*([A-Za-z]+)")
# Runs on the client in chdb (it writes a file on this machine), and readonly=1 does not stop it.
_OUTFILE = re.compile(r"\bINTO\s+OUTFILE\b", re.IGNORECASE)


def _code_only(sql: str) -> str:
    # Literals become an empty placeholder so keywords inside them are never seen.
    return _SKIPPED.sub(lambda match: "''" if match.group(1) else " ", sql)


def ensure_readonly(sql: str) -> None:
    """Raise ReadOnlyViolation unless sql is one read statement (SELECT/WITH/SHOW/DESCRIBE/EXPLAIN)."""
    code = _code_only(sql).strip()
    if code.endswith(";"):
        code = code[:-1]
    if ";" in code:
        raise ReadOnlyViolation("only one statement is allowed")
    match = _FIRST_WORD.match(code)
    keyword = match.group(1).upper() if match else ""
    if keyword not in READ_KEYWORDS:
        shown = keyword or "an empty statement"
        raise ReadOnlyViolation(f"{shown} is not allowed here; only SELECT, WITH, SHOW, DESCRIBE or EXPLAIN")
    if _OUTFILE.search(code):
        raise ReadOnlyViolation("INTO OUTFILE is not allowed here")
