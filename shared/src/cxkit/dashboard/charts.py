"""Charts as inline SVG made on the server: a line with its 95% interval as a band, and
horizontal bars (one-sided or either side of zero). No script, no external asset.

Every chart is an `<svg role="img">` with a `<title>` and a `<desc>` that says what it shows in
words; each plotted value is an element with class `point` or `bar` carrying `data-value` (and
`data-n`, `data-low`, `data-high` where known), so a page's numbers can be read back and checked.
The page puts a data table next to each chart as well."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

from cxkit.dashboard.formats import number

# About the width a chart gets on a phone and in a desktop card alike, so its text keeps its size.
WIDTH = 400
LINE_HEIGHT = 210
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 44, 12, 12, 30
BAR_ROW = 30
BAR_LABEL = 128
# Colours chosen for at least 4.5:1 against white (text) and 3:1 (shapes).
INK = "#1f2937"
MUTED = "#4b5563"
GRID = "#d1d5db"
LINE = "#1d4ed8"
BAND = "#93c5fd"
BAR = "#1d4ed8"
BAR_NEGATIVE = "#b91c1c"
TARGET = "#b45309"
N_LABELS_UP_TO = 12  # points that get their n written beside them (more would crowd the chart)
_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Point:
    """One point of a series: `value` None leaves a gap; `low`/`high` its 95% interval."""

    label: str
    value: float | None
    low: float | None = None
    high: float | None = None
    n: int | None = None


@dataclass(frozen=True, slots=True)
class Bar:
    label: str
    value: float | None
    note: str = ""


def _f(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About `count` round tick values covering [low, high]."""
    span = high - low
    if span <= 0:
        return [low]
    raw = span / (count - 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = -(-low // step) * step
    out = []
    value = first
    while value <= high + step * 1e-9:
        out.append(round(value, 10))
        value += step
    return out


def _text(x: float, y: float, content: str, *, anchor: str = "start", size: int = 13, fill: str = INK) -> str:
    """An SVG text element; `content` is escaped here. Muted text has the class `muted` (the page's
    dark scheme recolours by class: CSS outranks the presentation attributes)."""
    kind = ' class="muted"' if fill == MUTED else ""
    return f'<text{kind} x="{_f(x)}" y="{_f(y)}" text-anchor="{anchor}" font-size="{size}" fill="{fill}">{escape(content)}</text>'


def _svg(chart_id: str, height: float, title: str, desc: str, body: list[str], kind: str) -> Markup:
    head = (
        f'<svg class="chart chart-{kind}" id="{chart_id}" viewBox="0 0 {WIDTH} {_f(height)}" role="img" '
        f'aria-labelledby="{chart_id}-title {chart_id}-desc" preserveAspectRatio="xMidYMid meet" '
        f'xmlns="http://www.w3.org/2000/svg">'
        f'<title id="{chart_id}-title">{escape(title)}</title><desc id="{chart_id}-desc">{escape(desc)}</desc>'
    )
    return Markup(head + "".join(body) + "</svg>")


def line_chart(
    points: list[Point],
    *,
    title: str,
    y_min: float,
    y_max: float,
    unit: str = "",
    chart_id: str | None = None,
) -> Markup:
    """A line over the points with their 95% interval as a shaded band; the y axis is fixed to
    the metric's range so two charts of the same metric compare by eye."""
    chart_id = chart_id or f"chart-{next(_ids)}"
    plot_w = WIDTH - PAD_LEFT - PAD_RIGHT
    plot_h = LINE_HEIGHT - PAD_TOP - PAD_BOTTOM

    def x(i: int) -> float:
        return PAD_LEFT + (plot_w / 2 if len(points) == 1 else plot_w * i / (len(points) - 1))

    def y(v: float) -> float:
        v = min(max(v, y_min), y_max)
        return PAD_TOP + plot_h * (1 - (v - y_min) / (y_max - y_min))

    body = []
    for t in ticks(y_min, y_max):
        body.append(
            f'<line class="grid" x1="{PAD_LEFT}" x2="{WIDTH - PAD_RIGHT}" y1="{_f(y(t))}" y2="{_f(y(t))}" stroke="{GRID}" '
            'stroke-width="1"/>' + _text(PAD_LEFT - 6, y(t) + 4, f"{_f(t)}{unit}", anchor="end", size=12, fill=MUTED)
        )
    # The band, one polygon per run of points that have an interval.
    run: list[int] = []
    for i, p in enumerate([*points, None]):
        if p is not None and p.value is not None and p.low is not None and p.high is not None:
            run.append(i)
            continue
        if run:
            upper = [f"{_f(x(j))},{_f(y(points[j].high))}" for j in run]  # type: ignore[arg-type]
            lower = [f"{_f(x(j))},{_f(y(points[j].low))}" for j in reversed(run)]  # type: ignore[arg-type]
            if len(run) == 1:  # a lone interval: a short vertical bar
                j = run[0]
                body.append(
                    f'<rect class="band" x="{_f(x(j) - 4)}" y="{_f(y(points[j].high))}" width="8" '  # type: ignore[arg-type]
                    f'height="{_f(y(points[j].low) - y(points[j].high))}" fill="{BAND}" fill-opacity="0.6"/>'  # type: ignore[arg-type]
                )
            else:
                body.append(f'<polygon class="band" points="{" ".join(upper + lower)}" fill="{BAND}" fill-opacity="0.6"/>')
            run = []
    # The line, broken where a point has no value.
    segment: list[str] = []
    for i, p in enumerate([*points, None]):
        if p is not None and p.value is not None:
            segment.append(f"{_f(x(i))},{_f(y(p.value))}")
            continue
        if len(segment) > 1:
            body.append(f'<polyline class="line" points="{" ".join(segment)}" fill="none" stroke="{LINE}" stroke-width="2.5"/>')
        segment = []
    shown_labels = min(len(points), 4)  # at most four dates fit under the axis without overlapping
    labelled = {round(k * (len(points) - 1) / (shown_labels - 1)) for k in range(shown_labels)} if shown_labels > 1 else {0}
    # Texts at the first and last points lean inwards so they are neither cut nor over the axis.
    edge = {0: "start", len(points) - 1: "end"} if len(points) > 1 else {}
    for i, p in enumerate(points):
        if i in labelled:
            body.append(_text(x(i), LINE_HEIGHT - 10, p.label, anchor=edge.get(i, "middle"), size=12, fill=MUTED))
        if p.value is None:
            continue
        interval = f", 95% interval {number(p.low)} to {number(p.high)}" if p.low is not None and p.high is not None else ""
        attrs = f'data-label="{escape(p.label)}" data-value="{p.value}"'
        attrs += f' data-n="{p.n}"' if p.n is not None else ""
        if p.low is not None and p.high is not None:
            attrs += f' data-low="{p.low}" data-high="{p.high}"'
        body.append(
            f'<circle class="point" cx="{_f(x(i))}" cy="{_f(y(p.value))}" r="4" fill="{LINE}" stroke="#fff" '
            f'stroke-width="1.5" {attrs}>'
            f"<title>{escape(p.label)}: {number(p.value)}{escape(unit)}{interval}"
            f"{f', n = {p.n}' if p.n is not None else ''}</title></circle>"
        )
        if p.n is not None and len(points) <= N_LABELS_UP_TO:
            # The sample size beside each point (above it, or below near the top of the plot).
            near_top = y(p.value) < PAD_TOP + 16
            body.append(
                _text(x(i), y(p.value) + (16 if near_top else -9), f"n={p.n}", anchor=edge.get(i, "middle"), size=10, fill=MUTED)
            )
    shown = [p for p in points if p.value is not None]
    if shown:
        desc = (
            f"{len(shown)} points from {shown[0].label} to {shown[-1].label}; latest {number(shown[-1].value)}{unit}"
            f"{f' (n = {shown[-1].n})' if shown[-1].n is not None else ''}. The shaded band is the 95% interval. "
            "The table below has every value."
        )
    else:
        desc = "No values in this period."
    return _svg(chart_id, LINE_HEIGHT, title, desc, body, "line")


def bar_chart(
    bars: list[Bar],
    *,
    title: str,
    max_value: float | None = None,
    min_value: float = 0.0,
    unit: str = "",
    chart_id: str | None = None,
) -> Markup:
    """Horizontal bars with their value written beside them; with a negative `min_value` bars
    grow either side of zero (e.g. a gap to target: below the promise in red)."""
    chart_id = chart_id or f"chart-{next(_ids)}"
    values = [b.value for b in bars if b.value is not None]
    high = max_value if max_value is not None else max([*values, 0.0]) or 1.0
    low = min(min_value, *values) if values and min_value < 0 else min_value
    if low < 0:  # symmetric around zero, so left and right read alike
        high = low = max(abs(low), abs(high)) or 1.0
        low = -low
    left = BAR_LABEL
    right = WIDTH - PAD_RIGHT - 56
    height = PAD_TOP + BAR_ROW * max(len(bars), 1) + 8

    def x(v: float) -> float:
        return left + (right - left) * (min(max(v, low), high) - low) / (high - low)

    zero = x(0.0)
    body = [
        f'<line class="axis" x1="{_f(zero)}" x2="{_f(zero)}" y1="{PAD_TOP - 4}" y2="{height - 4}" stroke="{MUTED}" '
        'stroke-width="1"/>'
    ]
    for i, b in enumerate(bars):
        top = PAD_TOP + i * BAR_ROW
        label = b.label if len(b.label) <= 18 else b.label[:17] + "…"
        body.append(_text(left - 8, top + 17, label, anchor="end"))
        if b.value is None:
            body.append(_text(zero + 6, top + 17, "no data", fill=MUTED))
            continue
        start, end = sorted((zero, x(b.value)))
        colour, kind = (BAR_NEGATIVE, "bar negative") if b.value < 0 else (BAR, "bar")
        text_x = end + 6 if b.value >= 0 else start - 6
        anchor = "start" if b.value >= 0 else "end"
        if b.value < 0 and text_x < left + 30:  # no room on the left: write it right of zero
            text_x, anchor = zero + 6, "start"
        body.append(
            f'<rect class="{kind}" x="{_f(start)}" y="{top + 4}" width="{_f(max(end - start, 1))}" height="{BAR_ROW - 10}" '
            f'fill="{colour}" data-label="{escape(b.label)}" data-value="{b.value}"><title>{escape(b.label)}: '
            f"{number(b.value)}{escape(unit)}{f' ({escape(b.note)})' if b.note else ''}</title></rect>"
            + _text(text_x, top + 17, f"{number(b.value)}{unit}", anchor=anchor)
        )
    shown = [f"{b.label} {number(b.value)}{unit}" for b in bars if b.value is not None]
    desc = ("; ".join(shown) + ".") if shown else "No values."
    return _svg(chart_id, height, title, desc, body, "bar")
