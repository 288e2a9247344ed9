"""cxkit.dashboard without a server: the SVG charts (well-formed, one mark per value, placed where
the scale says, text escaped), their tick values, and the signed session and form tokens."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET

import pytest
from starlette.requests import Request

from cxkit.dashboard import charts
from cxkit.dashboard.charts import Bar, Point, bar_chart, line_chart
from cxkit.dashboard.sessions import COOKIE, DashboardSessions
from cxkit.testing import chart_values

SVG = "{http://www.w3.org/2000/svg}"


def _parse(markup: str) -> ET.Element:
    return ET.fromstring(str(markup))


def test_ticks_are_round_values_covering_the_range() -> None:
    assert charts.ticks(-100, 100) == [-100, -50, 0, 50, 100]
    assert charts.ticks(0, 100) == [0, 25, 50, 75, 100]
    assert charts.ticks(1, 7) == [2, 4, 6]
    assert charts.ticks(0, 0.8) == [0, 0.2, 0.4, 0.6, 0.8]
    assert charts.ticks(5, 5) == [5]


def test_line_chart_has_a_point_per_value_and_a_band_per_run_of_intervals() -> None:
    points = [
        Point("2026-11-02", 20.0, -10.0, 50.0, n=10),
        Point("2026-11-09", 40.0, 10.0, 70.0, n=12),
        Point("2026-11-16", None, n=0),  # only skipped answers: a gap
        Point("2026-11-23", 100.0, None, None, n=1),  # one answer: no interval
        Point("2026-11-30", -100.0, -100.0, -100.0, n=2),
    ]
    svg = line_chart(points, title="NPS by week", y_min=-100, y_max=100, chart_id="c")
    root = _parse(svg)
    assert root.get("role") == "img" and root.get("aria-labelledby") == "c-title c-desc"
    assert root.find(f"{SVG}title").text == "NPS by week"  # type: ignore[union-attr]
    assert "4 points from 2026-11-02 to 2026-11-30" in root.find(f"{SVG}desc").text  # type: ignore[union-attr,operator]
    circles = root.findall(f"{SVG}circle")
    assert [c.get("data-value") for c in circles] == ["20.0", "40.0", "100.0", "-100.0"]
    assert [c.get("data-n") for c in circles] == ["10", "12", "1", "2"]
    assert circles[2].get("data-low") is None
    # y: the top of the plot is y_max, the bottom y_min, zero halfway.
    top, bottom = charts.PAD_TOP, charts.LINE_HEIGHT - charts.PAD_BOTTOM
    assert float(circles[2].get("cy")) == top and float(circles[3].get("cy")) == bottom  # type: ignore[arg-type]
    assert float(circles[0].get("cy")) == pytest.approx(top + (bottom - top) * 0.4, abs=0.1)  # type: ignore[arg-type]
    # x: first at the left edge of the plot, last at the right.
    assert float(circles[0].get("cx")) == charts.PAD_LEFT  # type: ignore[arg-type]
    assert float(circles[3].get("cx")) == charts.WIDTH - charts.PAD_RIGHT  # type: ignore[arg-type]
    # Bands: the first two points (a polygon), the last one alone (a bar); the line breaks at the gap.
    assert len(root.findall(f"{SVG}polygon")) == 1 and len(root.findall(f"{SVG}rect")) == 1
    assert len(root.findall(f"{SVG}polyline")) == 2
    n_labels = [t.text for t in root.findall(f"{SVG}text") if (t.text or "").startswith("n=")]
    assert n_labels == ["n=10", "n=12", "n=1", "n=2"]
    assert chart_values(svg, "c")[0] == {"label": "2026-11-02", "value": "20.0", "n": "10", "low": "-10.0", "high": "50.0"}


def test_chart_text_is_escaped() -> None:
    svg = bar_chart([Bar('<script>alert("x")</script>', 3)], title="a < b & c", chart_id="e")
    root = _parse(svg)  # still well-formed XML
    assert "<script>" not in str(svg)
    assert root.find(f"{SVG}title").text == "a < b & c"  # type: ignore[union-attr]
    line = line_chart([Point('"><x', 1.0)], title="t", y_min=0, y_max=2, chart_id="f")
    assert _parse(line).find(f"{SVG}circle").get("data-label") == '"><x'  # type: ignore[union-attr]


def test_bar_chart_bars_grow_from_zero_either_side() -> None:
    svg = bar_chart([Bar("Checkout", -6.5), Bar("Delivery", 10.0), Bar("Support", None)], title="Gap", min_value=-1, chart_id="g")
    root = _parse(svg)
    bars = root.findall(f"{SVG}rect")
    assert [b.get("data-value") for b in bars] == ["-6.5", "10.0"]
    assert bars[0].get("fill") == charts.BAR_NEGATIVE and bars[1].get("fill") == charts.BAR
    zero = float(bars[1].get("x"))  # type: ignore[arg-type]
    assert float(bars[0].get("x")) + float(bars[0].get("width")) == pytest.approx(zero, abs=0.1)  # type: ignore[arg-type]
    # Symmetric scale: 10 reaches the right end, -6.5 reaches 65% of the way left.
    assert float(bars[1].get("width")) / float(bars[0].get("width")) == pytest.approx(10 / 6.5, rel=0.01)  # type: ignore[arg-type]
    assert "no data" in str(svg)
    assert _parse(bar_chart([], title="None", chart_id="h")).find(f"{SVG}desc").text == "No values."  # type: ignore[union-attr]


def _request(cookie: str | None = None) -> Request:
    headers = [(b"cookie", f"{COOKIE}={cookie}".encode())] if cookie else []
    return Request(
        {"type": "http", "method": "GET", "path": "/dashboard", "headers": headers, "scheme": "http", "server": ("t", 80)}
    )


def _cookie_of(sessions: DashboardSessions, session: object) -> str:
    from starlette.responses import Response

    response = Response()
    sessions.store(response, _request(), session)  # type: ignore[arg-type]
    return response.headers["set-cookie"].split(";")[0].split("=", 1)[1]


def test_session_cookie_round_trip_and_refusals() -> None:
    sessions = DashboardSessions(b"k" * 32, max_age_s=60)
    session = sessions.new("digest")
    cookie = _cookie_of(sessions, session)
    assert sessions.read(_request(cookie)) == session and session.signed_in
    # One character of the payload changed (not the signature's last one: base64 may ignore its low bits).
    assert sessions.read(_request(cookie[:5] + ("x" if cookie[5] != "x" else "y") + cookie[6:])) is None
    assert sessions.read(_request("garbage")) is None and sessions.read(_request()) is None
    assert DashboardSessions(b"other" * 8, max_age_s=60).read(_request(cookie)) is None  # another secret
    expired = DashboardSessions(b"k" * 32, max_age_s=1)
    old = _cookie_of(expired, session)
    time.sleep(2.1)
    assert expired.read(_request(old)) is None


def test_form_token_belongs_to_its_session() -> None:
    sessions = DashboardSessions(b"k" * 32, max_age_s=60)
    mine, theirs = sessions.new(), sessions.new()
    token = sessions.form_token(mine)
    assert sessions.form_token_ok(mine, token)
    assert not sessions.form_token_ok(theirs, token)
    assert not sessions.form_token_ok(None, token)
    assert not sessions.form_token_ok(mine, "") and not sessions.form_token_ok(mine, None)
    assert not sessions.form_token_ok(mine, token + "x")
    assert not DashboardSessions(b"z" * 32, max_age_s=60).form_token_ok(mine, token)
