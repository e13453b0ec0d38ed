"""The SVG charts are well-formed and draw what they are given."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np

from curation.plots import bar_chart, histogram, line_chart

SVG = "{http://www.w3.org/2000/svg}"


def test_bar_chart_draws_one_bar_per_value_with_its_value_in_the_tooltip():
    svg = ET.fromstring(bar_chart(["a", "b", "c"], {"pool": [1, 2, 3], "selected": [3, 2, 1]}, title="t <&>"))
    bars = [r for r in svg.iter(f"{SVG}rect") if r.find(f"{SVG}title") is not None]
    assert len(bars) == 6 and bars[2].find(f"{SVG}title").text == "c: 3"
    heights = [float(r.get("height")) for r in bars[:3]]
    assert heights[0] < heights[1] < heights[2]  # taller bar for a larger value
    assert svg.find(f"{SVG}title").text == "t <&>"  # escaped in the markup, intact after parsing


def test_histogram_and_line_chart_are_well_formed():
    rng = np.random.default_rng(0)
    h = ET.fromstring(histogram({"x": rng.normal(size=100), "y": []}, title="h", bins=10))
    assert len(list(h.iter(f"{SVG}polyline"))) == 2
    grid = np.geomspace(1, 1000, 20)
    line = ET.fromstring(line_chart({"g1": (grid, grid ** -0.5)}, markers={"g1": ([58.8], [0.13])}, logx=True, title="c"))
    assert len(list(line.iter(f"{SVG}polyline"))) == 1 and len(list(line.iter(f"{SVG}circle"))) == 1
