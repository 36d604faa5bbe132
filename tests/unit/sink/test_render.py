"""How `clickwire sql` prints rows: table, CSV and JSON."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from clickwire.cli.tools import render

ROWS = [{"link": "a", "n": 2, "at": datetime(2025, 3, 10, tzinfo=UTC), "tags": ["x", "y"], "ref": None}]


def test_csv_has_a_header_and_iso_times() -> None:
    """CSV starts with the column names; times are ISO 8601, lists JSON and NULL spelled out."""
    assert render(ROWS, "csv").splitlines() == ["link,n,at,tags,ref",
                                                'a,2,2025-03-10T00:00:00+00:00,"[""x"",""y""]",NULL']


def test_json_is_an_array_of_objects() -> None:
    """JSON output parses back to the rows."""
    assert orjson.loads(render(ROWS, "json")) == [{**ROWS[0], "at": "2025-03-10T00:00:00+00:00"}]


def test_table_shows_values_and_row_count() -> None:
    """The table names every column and says how many rows there are."""
    text = render(ROWS, "table")
    assert all(word in text for word in ("link", "tags", "2025-03-10T00:00:00+00:00", "(1 row)"))
    assert render([], "table").endswith("(0 rows)")
