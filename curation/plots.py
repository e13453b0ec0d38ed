"""Charts for the HTML report, drawn with plotly: one house style, one PlotSpec converter.

* :func:`to_figure` turns a :class:`~curation.report_schema.PlotSpec` (a chart as data, what
  selectors return from ``report_plots`` and what the page builds for its own charts) into a
  plotly figure. It is the only place a PlotSpec is drawn.
* :func:`embedding_map` draws the pool on its first two principal axes (the page's map).
* :func:`figure_html` turns a figure into the ``<div>`` the page embeds, with plotly.js inlined
  when asked (the page asks once, for its first figure).

The house style, so every chart reads the same way:

* :data:`PALETTE`: 14 colours that stay apart under the common colour-vision deficiencies
  (Okabe–Ito without its yellow, then seven more picked for distance); nothing pale on white.
  Series take colours in order, so a chart's first series is always blue.
* legends sit outside the plot area (above it, horizontal; the map's on its right), where
  plotly grows the margin to fit them, so they never cover data;
* every axis has a title; value axes keep plotly's round-number ticks (2k, not 2000.0), with a
  d3 format where it helps (``.0%`` for shares);
* the width follows the page (``responsive``, no fixed width); long category labels are cut
  to :data:`LABEL_CHARS` characters, and the hover shows the full label.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio

from curation.report_schema import PlotSpec

PALETTE: tuple[str, ...] = (
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000",  # Okabe–Ito, less its yellow
    "#661100", "#332288", "#555555", "#785EF0", "#B15928", "#648FFF", "#225522",  # picked to stay apart (below)
)
# The last seven were picked one at a time from well-known colour-blind-safe sets (Tol's, IBM's,
# ColorBrewer's): each time the candidate farthest (CIELAB distance) from those already in, under
# normal vision and simulated deuteranopia, protanopia and tritanopia; none is pale on white
# (contrast >= 2). tests/curation/test_plots.py checks both properties.
LABEL_CHARS = 22  # longer category labels are cut on the axis (the hover has them whole)
HEIGHT = 380
CONFIG = {"responsive": True, "displaylogo": False, "modeBarButtonsToRemove": ["select2d", "lasso2d"]}
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"


def colour(i: int) -> str:
    """The ``i``-th palette colour (the palette repeats past its end)."""
    return PALETTE[i % len(PALETTE)]


def short_labels(labels: Sequence[Any], n: int = LABEL_CHARS) -> list[str]:
    """Labels cut to ``n`` characters with an ellipsis, kept distinct (plotly merges equal
    categories, so two long labels sharing a prefix get a ``#2`` suffix)."""
    out: list[str] = []
    seen: set[str] = set()
    for label in map(str, labels):
        short = label if len(label) <= n else label[: n - 1] + "…"
        k = 2
        while short in seen:
            short = f"{label[: n - 4]}…#{k}"
            k += 1
        seen.add(short)
        out.append(short)
    return out


def layout(*, xtitle: str, ytitle: str, yformat: str = "", height: int = HEIGHT, **extra: Any) -> dict[str, Any]:
    """The house layout: white template, palette, axis titles, legend above the plot area."""
    return {
        "template": "plotly_white",
        "colorway": list(PALETTE),
        "font": {"family": FONT, "size": 13, "color": "#222"},
        "height": height,
        "autosize": True,
        "margin": {"l": 64, "r": 24, "t": 24, "b": 56},
        # outside the plot area: plotly pushes the top margin to make room, so data is never covered
        "legend": {"orientation": "h", "x": 0, "xanchor": "left", "y": 1.02, "yanchor": "bottom"},
        "xaxis": {"title": {"text": xtitle}, "automargin": True},
        "yaxis": {"title": {"text": ytitle}, "automargin": True, "tickformat": yformat, "rangemode": "tozero"},
        "hoverlabel": {"align": "left"},
        **extra,
    }


def _floats(values: Any) -> list[float | None]:
    # plain lists, not numpy arrays: plotly would store arrays base64-encoded, and the page's
    # figure data should stay readable (and checkable) as JSON
    return [None if v is None or (isinstance(v, float) and np.isnan(v)) else float(v)
            for v in np.asarray(values, dtype=object).ravel().tolist()]


def bar_figure(categories: Sequence[Any], series: Mapping[str, Sequence[float]], *, xtitle: str, ytitle: str,
               yformat: str = "", stacked: bool = False) -> go.Figure:
    """Bars: one group (or stack) per category, one bar per series; categories are always
    categorical (cluster ``3`` is a name, not a position) and keep their order."""
    full = [str(c) for c in categories]
    short = short_labels(full)
    fig = go.Figure(layout=layout(xtitle=xtitle, ytitle=ytitle, yformat=yformat,
                                  barmode="stack" if stacked else "group"))
    fig.update_layout(legend_traceorder="normal")  # stacked bars would list the series bottom-up
    value = f"%{{y:{yformat}}}" if yformat else "%{y}"
    for i, (name, ys) in enumerate(series.items()):
        fig.add_trace(go.Bar(x=short, y=_floats(ys), name=str(name), marker_color=colour(i), customdata=full,
                             hovertemplate=f"%{{customdata}}<br>{_plain(name)}: {value}<extra></extra>"))
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=short,
                     tickangle=-40 if len(full) > 12 or max(map(len, short), default=0) > 8 else 0)
    return fig


def histogram_figure(series: Mapping[str, Sequence[float]], *, xtitle: str, ytitle: str = "",
                     bins: int = 40) -> go.Figure:
    """Overlaid histograms on shared bins, each series as shares of its own items (so a small
    series and a large one compare); empty series are left out of the plot but named in the legend
    title."""
    fig = go.Figure(layout=layout(xtitle=xtitle, ytitle=ytitle or "share of the series' items", yformat=".0%",
                                  barmode="overlay", showlegend=True))  # named even when one series has items
    empty = []
    for i, (name, xs) in enumerate(series.items()):
        vals = [v for v in _floats(xs) if v is not None]
        if not vals:
            empty.append(str(name))
            continue
        fig.add_trace(go.Histogram(x=vals, name=f"{name} (n={len(vals):,})", histnorm="probability",
                                   nbinsx=bins, bingroup="shared", marker_color=colour(i), opacity=0.6,
                                   hovertemplate=f"{_plain(name)}<br>%{{x}}: %{{y:.1%}}<extra></extra>"))
    if empty:
        fig.update_layout(legend_title_text=f"no items: {', '.join(empty)}")
    return fig


def line_figure(lines: Mapping[str, tuple[Sequence[float], Sequence[float]]], *, xtitle: str, ytitle: str,
                markers: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None, logx: bool = False,
                yformat: str = "") -> go.Figure:
    """Lines (x, y) per series, plus optional markers drawn in their series' colour."""
    markers = markers or {}
    fig = go.Figure(layout=layout(xtitle=xtitle, ytitle=ytitle, yformat=yformat))
    names = list(dict.fromkeys([*lines, *markers]))
    for i, name in enumerate(names):
        if name in lines:
            xs, ys = lines[name]
            fig.add_trace(go.Scatter(x=_floats(xs), y=_floats(ys), mode="lines", name=str(name), legendgroup=str(name),
                                     line={"color": colour(i), "width": 2},
                                     hovertemplate=f"{_plain(name)}<br>%{{x:.3~g}}: %{{y:.3~g}}<extra></extra>"))
        if name in markers:
            xs, ys = markers[name]
            fig.add_trace(go.Scatter(x=_floats(xs), y=_floats(ys), mode="markers", name=str(name),
                                     legendgroup=str(name), showlegend=name not in lines,
                                     marker={"color": colour(i), "size": 9, "line": {"color": "white", "width": 1}},
                                     hovertemplate=f"{_plain(name)}<br>%{{x:.4~g}}: %{{y:.3~g}}<extra></extra>"))
    if logx:
        fig.update_xaxes(type="log", **_log_ticks([x for xs, _ in [*lines.values(), *markers.values()]
                                                   for x in _floats(xs) if x is not None and x > 0]))
    return fig


def _log_ticks(xs: Sequence[float]) -> dict[str, Any]:
    # 1, 2, 5, 10, 20, 50, ... written out: plotly's own log ticks label 2..9 of each decade as bare digits
    if not xs:
        return {}
    lo, hi = min(xs), max(xs)
    vals = [m * 10.0 ** k for k in range(int(np.floor(np.log10(lo))), int(np.ceil(np.log10(hi))) + 1)
            for m in (1, 2, 5) if lo <= m * 10.0 ** k <= hi]
    return {"tickvals": vals, "ticktext": [f"{v:,g}" for v in vals]} if len(vals) >= 2 else {}


def to_figure(spec: PlotSpec) -> go.Figure:
    """The plotly figure of a :class:`~curation.report_schema.PlotSpec` (its title is the
    caption the page puts above it, not part of the figure).

    Raises:
        ValueError: ``spec.kind`` is not ``bar``, ``histogram`` or ``line``.
    """
    if spec.kind == "bar":
        return bar_figure(spec.categories, spec.series, xtitle=spec.xlabel or "category",
                          ytitle=spec.ylabel or "value", yformat=spec.yformat, stacked=spec.stacked)
    if spec.kind == "histogram":
        return histogram_figure(spec.series, xtitle=spec.xlabel or "value", ytitle=spec.ylabel)
    if spec.kind == "line":
        return line_figure(spec.series, markers=spec.markers, logx=spec.logx, xtitle=spec.xlabel or "x",
                           ytitle=spec.ylabel or "y", yformat=spec.yformat)
    raise ValueError(f"unknown plot kind {spec.kind!r}; expected bar, histogram or line")


def embedding_map(x: Sequence[float], y: Sequence[float], selected: Sequence[bool], hover: Sequence[str],
                  colourings: Mapping[str, Sequence[Any]], *, height: int = 620) -> go.Figure:
    """The pool as points on two axes, coloured by the first of ``colourings`` (name -> one
    category per point), with buttons switching to the others; selected points are larger and
    outlined. ``hover`` is each point's hover text (plotly's HTML subset: escape it first).

    Every point is in exactly one *visible* trace (per category: the not-selected points, then
    the selected ones drawn above every not-selected point); the traces of the other colourings
    hold the same points and start hidden, so the plot shows each point once.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    sel = np.asarray(selected, bool)
    hover = np.asarray(hover, dtype=object)
    fig = go.Figure(layout=layout(xtitle="first principal axis", ytitle="second principal axis", height=height))
    fig.update_yaxes(rangemode="normal", zeroline=False)
    fig.update_xaxes(zeroline=False)
    # many categories: a vertical legend on the right (it scrolls when long) instead of rows above
    fig.update_layout(legend={"orientation": "v", "x": 1.02, "xanchor": "left", "y": 1, "yanchor": "top"},
                      margin={"t": 56})
    spans = []
    for c, (by, cats) in enumerate(colourings.items()):
        cats = np.asarray([str(v) for v in cats], dtype=object)
        names = sorted(set(cats), key=_natural)
        first = len(fig.data)
        for picked in (False, True):  # every not-selected trace first: selected points stay on top
            for i, name in enumerate(names):
                m = (cats == name) & (sel == picked)
                if not m.any():
                    continue
                marker = ({"size": 10, "line": {"color": "#111", "width": 1.5}, "opacity": 0.95} if picked
                          else {"size": 6, "line": {"width": 0}, "opacity": 0.55})
                fig.add_trace(go.Scatter(
                    x=_floats(x[m]), y=_floats(y[m]), mode="markers", name=short_labels([name])[0],
                    legendgroup=f"{by}={name}", showlegend=not picked or not ((cats == name) & ~sel).any(),
                    marker={"color": colour(i), **marker}, hovertext=hover[m].tolist(), hoverinfo="text",
                    visible=c == 0, meta={"colour_by": by, "selected": picked}))
        spans.append((by, first, len(fig.data)))
    if len(spans) > 1:
        buttons = [{"label": f"colour by {by}", "method": "update",
                    "args": [{"visible": [lo <= t < hi for t in range(len(fig.data))]}, {"legend.title.text": by}]}
                   for by, lo, hi in spans]
        fig.update_layout(updatemenus=[{"type": "buttons", "direction": "right", "buttons": buttons, "x": 0,
                                        "xanchor": "left", "y": 1.02, "yanchor": "bottom", "showactive": True,
                                        "pad": {"t": 0, "b": 4}}])
    fig.update_layout(legend_title_text=spans[0][0] if spans else "")
    return fig


def figure_html(fig: go.Figure, div_id: str, *, include_js: bool) -> str:
    """The ``<div>`` of ``fig`` with the stable id ``div_id``; with ``include_js`` it carries the
    whole plotly.js inline (the page sets it on its first figure only), otherwise it expects it
    loaded. No CDN, no MathJax, nothing fetched: the page works offline."""
    return pio.to_html(fig, include_plotlyjs=bool(include_js), include_mathjax=False, full_html=False,
                       div_id=div_id, config=CONFIG, default_width="100%")


def _plain(name: Any) -> str:
    # a series name inside a hovertemplate: braces would read as template fields, and plotly reads
    # a subset of HTML there (a group named "<b>" would turn bold)
    return escape(str(name), quote=False).replace("{", "(").replace("}", ")")


def _natural(label: str) -> tuple[int, float, str]:
    # cluster "10" after "9": numbers by value, then everything else by name
    try:
        return (0, float(label), "")
    except ValueError:
        return (1, 0.0, label)
