"""Small dependency-free SVG charts for the HTML report: grouped bars, histograms, line plots.

Each function returns an ``<svg>`` string sized ``width × height`` pixels. Colours come from a
fixed colour-blind-safe palette (Okabe–Ito) in series order, so a series keeps its colour
across charts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

import numpy as np

PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]
_M = {"left": 56, "right": 12, "top": 28, "bottom": 64}  # room for axis labels and the legend


def _frame(width: int, height: int, title: str, body: list[str], legend: Sequence[str]) -> str:
    items = [f'<text x="{_M["left"]}" y="16" font-size="13" font-weight="bold">{escape(title)}</text>']
    x = _M["left"]
    for i, name in enumerate(legend):
        items.append(f'<rect x="{x}" y="{height - 14}" width="10" height="10" fill="{PALETTE[i % len(PALETTE)]}"/>'
                     f'<text x="{x + 14}" y="{height - 5}" font-size="11">{escape(name)}</text>')
        x += 24 + 7 * len(name)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'font-family="sans-serif" role="img"><title>{escape(title)}</title>'
            + "".join(items + body) + "</svg>")


def _axis_y(lo: float, hi: float, width: int, height: int, fmt: str = "{:.3g}") -> tuple[list[str], callable]:
    ph = height - _M["top"] - _M["bottom"]
    span = hi - lo or 1.0

    def y(v: float) -> float:
        return _M["top"] + ph * (1 - (v - lo) / span)

    out = []
    for t in np.linspace(lo, hi, 5):
        out.append(f'<line x1="{_M["left"]}" x2="{width - _M["right"]}" y1="{y(t):.1f}" y2="{y(t):.1f}" '
                   f'stroke="#ddd"/><text x="{_M["left"] - 4}" y="{y(t) + 4:.1f}" font-size="10" '
                   f'text-anchor="end">{fmt.format(t)}</text>')
    return out, y


def bar_chart(categories: Sequence[str], series: Mapping[str, Sequence[float]], *, title: str,
              width: int = 720, height: int = 280) -> str:
    """Grouped vertical bars: one group of bars per category, one bar per series."""
    cats = [str(c) for c in categories]
    vals = {k: np.asarray(v, dtype=float) for k, v in series.items()}
    hi = max([float(v.max()) for v in vals.values() if len(v)] + [1e-12])
    body, y = _axis_y(0.0, hi, width, height)
    pw = width - _M["left"] - _M["right"]
    slot = pw / max(len(cats), 1)
    bw = slot * 0.8 / max(len(vals), 1)
    for j, (_, v) in enumerate(vals.items()):
        for i, val in enumerate(v):
            x = _M["left"] + i * slot + slot * 0.1 + j * bw
            body.append(f'<rect x="{x:.1f}" y="{y(val):.1f}" width="{bw:.1f}" height="{y(0) - y(val):.1f}" '
                        f'fill="{PALETTE[j % len(PALETTE)]}"><title>{escape(cats[i])}: {val:.4g}</title></rect>')
    if len(cats) <= 40:
        for i, c in enumerate(cats):
            x = _M["left"] + (i + 0.5) * slot
            body.append(f'<text x="{x:.1f}" y="{y(0) + 12:.1f}" font-size="9" text-anchor="end" '
                        f'transform="rotate(-40 {x:.1f} {y(0) + 12:.1f})">{escape(c[:18])}</text>')
    return _frame(width, height, title, body, list(vals))


def histogram(series: Mapping[str, Sequence[float]], *, title: str, bins: int = 40, width: int = 720,
              height: int = 260) -> str:
    """Overlaid histograms (as densities) of each series on shared bins."""
    data = {k: np.asarray(v, dtype=float) for k, v in series.items()}
    allv = np.concatenate([v for v in data.values() if len(v)] or [np.zeros(1)])
    edges = np.histogram_bin_edges(allv, bins=bins)
    dens = {k: np.histogram(v, bins=edges, density=True)[0] if len(v) else np.zeros(bins) for k, v in data.items()}
    hi = max(float(d.max()) for d in dens.values()) or 1.0
    body, y = _axis_y(0.0, hi, width, height)
    pw = width - _M["left"] - _M["right"]

    def x(v: float) -> float:
        return _M["left"] + pw * (v - edges[0]) / ((edges[-1] - edges[0]) or 1.0)

    for j, d in enumerate(dens.values()):
        pts = " ".join(f"{x(e):.1f},{y(h):.1f} {x(e2):.1f},{y(h):.1f}" for e, e2, h in zip(edges[:-1], edges[1:], d))
        body.append(f'<polyline points="{pts}" fill="none" stroke="{PALETTE[j % len(PALETTE)]}" stroke-width="1.5"/>')
    for t in np.linspace(edges[0], edges[-1], 5):
        body.append(f'<text x="{x(t):.1f}" y="{y(0) + 14:.1f}" font-size="10" text-anchor="middle">{t:.3g}</text>')
    return _frame(width, height, title, body, list(dens))


def line_chart(lines: Mapping[str, tuple[Sequence[float], Sequence[float]]], *, title: str,
               markers: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None, logx: bool = False,
               xlabel: str = "", width: int = 720, height: int = 300) -> str:
    """Lines (x, y) per series, plus optional markers drawn in the series' colour."""
    markers = markers or {}
    xs = np.concatenate([np.asarray(v[0], float) for v in [*lines.values(), *markers.values()]] or [np.ones(1)])
    ys = np.concatenate([np.asarray(v[1], float) for v in [*lines.values(), *markers.values()]] or [np.zeros(1)])
    fx = np.log10 if logx else (lambda a: np.asarray(a, float))
    x_lo, x_hi = float(np.min(fx(np.maximum(xs, 1e-12)))), float(np.max(fx(np.maximum(xs, 1e-12))))
    body, y = _axis_y(float(min(ys.min(), 0.0)), float(ys.max()) or 1.0, width, height)
    pw = width - _M["left"] - _M["right"]

    def x(v: float) -> float:
        return _M["left"] + pw * (float(fx(max(v, 1e-12))) - x_lo) / ((x_hi - x_lo) or 1.0)

    names = list(dict.fromkeys([*lines, *markers]))
    for name in names:
        c = PALETTE[names.index(name) % len(PALETTE)]
        if name in lines:
            pts = " ".join(f"{x(a):.1f},{y(b):.1f}" for a, b in zip(*lines[name]))
            body.append(f'<polyline points="{pts}" fill="none" stroke="{c}" stroke-width="1.5"/>')
        for a, b in zip(*markers.get(name, ((), ()))):
            body.append(f'<circle cx="{x(a):.1f}" cy="{y(b):.1f}" r="3" fill="{c}"><title>{escape(name)}: '
                        f'n={a:.4g}, {b:.4g}</title></circle>')
    for t in np.linspace(x_lo, x_hi, 5):
        label = f"{10 ** t:.3g}" if logx else f"{t:.3g}"
        xt = _M["left"] + pw * (t - x_lo) / ((x_hi - x_lo) or 1.0)
        body.append(f'<text x="{xt:.1f}" y="{y(float(min(ys.min(), 0.0))) + 14:.1f}" font-size="10" '
                    f'text-anchor="middle">{label}</text>')
    if xlabel:
        body.append(f'<text x="{width - _M["right"]}" y="{height - 30}" font-size="10" text-anchor="end">'
                    f'{escape(xlabel)}</text>')
    return _frame(width, height, title, body, names)


def draw(spec) -> str:
    """Render a :class:`curation.report_schema.PlotSpec` with the helper its ``kind`` names."""
    if spec.kind == "bar":
        return bar_chart(spec.categories, spec.series, title=spec.title)
    if spec.kind == "histogram":
        return histogram(spec.series, title=spec.title)
    if spec.kind == "line":
        return line_chart(spec.series, markers=spec.markers, logx=spec.logx, xlabel=spec.xlabel, title=spec.title)
    raise ValueError(f"unknown plot kind {spec.kind!r}; expected bar, histogram or line")
