"""The report page (`curate report DATASET --html PATH`) of a real build, opened in real headless Chromium.

One small real version (420 real prompts of 7 tasks, static-minilm vectors, iterative kMQ so the
method has per-round charts; built twice so the second version has a parent) is rendered by the
CLI in-process, then Chromium opens the file with no network: once for a screenshot, once with
``--dump-dom`` on a copy of the page carrying a small script that lists every element reaching
past the window's right edge. The expectations (points on the map, charts per method section)
are computed from report.parquet, the manifest and the selector, not read back from the page.
"""

from __future__ import annotations

import json
import os
import re
import signal
import struct
import subprocess
import zlib
from html import escape
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import plotly.offline
import polars as pl
import pytest

import curation
from curation.html_report import MAP_POINTS, _map_sample
from curation.report import selector_of
from flows.cli import main

CHROMIUM = Path("/usr/bin/chromium")
WIDTH = 1280
# What the page must not do: reach the network, show a first-run page, or sync anything.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]
OVERFLOW_PROBE = """<script>
window.addEventListener("load", function () {
  setTimeout(function () {  // after plotly's first draw and its resize to the container
    var width = document.documentElement.clientWidth, over = [];
    document.querySelectorAll("body *").forEach(function (el) {
      var r = el.getBoundingClientRect();
      if ((r.width > 0 || r.height > 0) && r.right > width + 0.5) {
        over.push(el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") + "." + (el.getAttribute("class") || "")
                  + " right=" + Math.round(r.right));
      }
    });
    document.body.dataset.overflow = JSON.stringify(over);
    document.body.dataset.viewport = String(width);
  }, 2000);
});
</script>"""


@pytest.fixture(scope="module")
def page(tmp_path_factory, evals_sample):
    work = tmp_path_factory.mktemp("report-page")
    recipe = {
        "name": "page", "seed": 3,
        "sources": [{"name": "evals", "kind": "files", "path": str(evals_sample), "id": "prompt_id", "text": "text",
                     "label": "task"}],
        "groups": ["lang"],
        "embed": {"model": "static-minilm"},
        "cluster": {"k": 7},
        "select": {"method": "kmq-iterative", "budget": 140, "rounds": 3},
        "output": {"root": str(work / "out")},
    }
    curation.build(recipe)
    version = curation.build(recipe, overrides=["select.budget=161"])  # v0002: a parent to compare with
    out = work / "report.html"
    assert main(["report", str(version.path.parent), "--html", str(out)]) == 0
    return version, out


def chromium(args: list[str], profile: Path) -> subprocess.Popen:
    # its own session, so the whole process tree (renderer, GPU and zygote helpers) can be ended
    return subprocess.Popen([str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, start_new_session=True)


@pytest.fixture(scope="module")
def browser(page, tmp_path_factory):
    """The screenshot and the rendered DOM of the page (with the overflow probe), from two
    Chromium runs side by side; every Chromium process is gone afterwards."""
    assert CHROMIUM.is_file(), "Chromium is missing: `make services` installs it"
    _, html = page
    tmp = tmp_path_factory.mktemp("chromium")
    probed = tmp / "probed.html"
    probed.write_text(html.read_text().replace("</body>", OVERFLOW_PROBE + "</body>"))
    png = tmp / "report.png"
    common = [f"--window-size={WIDTH},4000", "--virtual-time-budget=10000"]
    procs = [chromium([*common, f"--screenshot={png}", html.as_uri()], tmp / "profile-shot"),
             chromium([*common, "--dump-dom", probed.as_uri()], tmp / "profile-dom")]
    try:
        outs = [p.communicate(timeout=90)[0] for p in procs]
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
    return png, outs[1]


class Dom(HTMLParser):
    """A minimal element tree of an HTML document: (tag, attributes, children)."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def __init__(self, html: str) -> None:
        super().__init__()
        self.root = {"tag": "#root", "attrs": {}, "children": [], "text": []}
        self.stack = [self.root]
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        node = {"tag": tag, "attrs": dict(attrs), "children": [], "text": []}
        self.stack[-1]["children"].append(node)
        if tag not in self.VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag, attrs):
        self.stack[-1]["children"].append({"tag": tag, "attrs": dict(attrs), "children": [], "text": []})

    def handle_data(self, data):
        self.stack[-1]["text"].append(data)

    def handle_endtag(self, tag):
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i]["tag"] == tag:
                del self.stack[i:]
                return


def walk(node):
    yield node
    for child in node["children"]:
        yield from walk(child)


def classes(node) -> set[str]:
    return set((node["attrs"].get("class") or "").split())


def find(node, pred):
    return [n for n in walk(node) if pred(n)]


def by_id(root, ident):
    [node] = find(root, lambda n: n["attrs"].get("id") == ident)
    return node


def plotly_figures(html: str) -> dict[str, dict]:
    """div id -> {"data": [...], "layout": {...}}: the figures the page hands to Plotly.newPlot."""
    decoder, out = json.JSONDecoder(), {}
    for m in re.finditer(r'Plotly\.newPlot\(\s*"([^"]+)",\s*', html):
        data, end = decoder.raw_decode(html, m.end())
        layout, _ = decoder.raw_decode(html, re.compile(r"\s*,\s*").match(html, end).end())
        out[m.group(1)] = {"data": data, "layout": layout}
    return out


def png_pixels(path: Path) -> tuple[int, int, bytes]:
    """(width, height, the decompressed scanlines) of a PNG, with the standard library only."""
    raw = path.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, size = 8, b"", None
    while pos < len(raw):
        n, kind = struct.unpack(">I4s", raw[pos:pos + 8])
        if kind == b"IHDR":
            size = struct.unpack(">II", raw[pos + 8:pos + 16])
        elif kind == b"IDAT":
            idat += raw[pos + 8:pos + 8 + n]
        pos += 12 + n
    return size[0], size[1], zlib.decompress(idat)


def expected_map_points(report: pl.DataFrame) -> int:
    pool = report.filter(pl.col("status").is_in(["selected", "not_selected"]) & pl.col("map_x").is_not_null())
    return min(pool.height, 5000)


def test_the_page_is_one_offline_file_with_plotly_inlined_once(page):
    _, html = page
    text = html.read_text()
    assert text.count(plotly.offline.get_plotlyjs()[:300]) == 1  # the library, once
    dom = Dom(text).root
    assert not find(dom, lambda n: n["tag"] in ("script", "img", "iframe") and n["attrs"].get("src"))
    assert not find(dom, lambda n: n["tag"] == "link")  # no stylesheet or font from elsewhere
    ids = [n["attrs"]["id"] for n in find(dom, lambda n: n["tag"] == "section")]
    assert ids == ["overview", "map", "clusters", "groups", "examples", "method", "method-rounds", "delta", "timings"]


def test_screenshot_is_a_real_picture_of_the_page(browser):
    png, _ = browser
    width, height, pixels = png_pixels(png)
    assert (width, height) == (WIDTH, 4000) and png.stat().st_size > 100_000
    assert len(set(pixels[:: 97])) > 50  # many shades: text and charts, not a blank or one-colour page


def test_rendered_map_draws_one_point_per_plotted_pool_row(page, browser):
    version, _ = page
    _, dom_html = browser
    dom = Dom(dom_html).root
    expected = expected_map_points(version.report())
    assert expected == 420  # the small pool is drawn whole
    section = by_id(dom, "map")
    assert int(section["attrs"]["data-points"]) == expected
    assert "All 420 pool items are shown (161 selected)." in " ".join(t for n in walk(section) for t in n["text"])
    plot = by_id(dom, "embedding-map")
    assert "js-plotly-plot" in classes(plot)  # plotly ran (offline: the page has no other source)
    layers = find(plot, lambda n: "scatterlayer" in classes(n))
    points = [n for layer in layers for n in walk(layer) if n["tag"] == "path" and "point" in classes(n)]
    assert len(points) == expected
    # and the figure handed to plotly holds exactly those points in its visible traces
    fig = plotly_figures(dom_html)["embedding-map"]
    assert sum(len(t["x"]) for t in fig["data"] if t.get("visible", True) is True) == expected
    selected = sum(len(t["x"]) for t in fig["data"] if t.get("visible", True) is True and t["meta"]["selected"])
    assert selected == version.manifest["counts"]["selected"] == 161


def test_map_hover_names_the_item_its_reason_and_the_text_of_selected_items(page):
    version, html = page
    fig = plotly_figures(html.read_text())["embedding-map"]
    hover = {t["meta"]["selected"]: t["hovertext"][0] for t in fig["data"] if t.get("visible", True) is True}
    report = version.report()
    picked = version.data()
    first = hover[True].split("<br>")[0].removeprefix("<b>").removesuffix("</b>")
    row = report.filter(pl.col("id") == first).row(0, named=True)
    assert row["status"] == "selected" and f"cluster: {row['cluster']}" in hover[True]
    assert "kmq-iterative: picked in round" in hover[True] and "text: " in hover[True]
    text = picked.filter(pl.col("id") == first)["text"][0]
    assert escape(" ".join(text.split()), quote=False)[:40] in hover[True].replace("<br>", " ")
    assert "not picked" in hover[False] and "text: " not in hover[False]  # texts are published for selected rows


def test_each_method_section_shows_each_chart_the_selector_makes(page, browser):
    version, _ = page
    _, dom_html = browser
    dom = Dom(dom_html).root
    cls, params = selector_of(version.manifest)
    specs = cls.report_plots(version.report(), version.manifest["selection"], params)
    assert [s.heading for s in specs] == ["Rounds", ""]  # cluster weights and picks, per round
    sections = find(dom, lambda n: n["tag"] == "section" and "method-plots" in classes(n))
    assert [s["attrs"]["id"] for s in sections] == ["method-rounds"]
    drawn = [n for n in walk(sections[0]) if "js-plotly-plot" in classes(n)]
    assert len(drawn) == len(specs) == int(sections[0]["attrs"]["data-plots"])
    # the weights chart: one bar per cluster and round, from manifest.selection.cluster_weights
    weights = version.manifest["selection"]["cluster_weights"]
    bars = [n for n in walk(drawn[0]) if "point" in classes(n) and n["tag"] == "g"]
    assert len(bars) == len(weights) * len(weights[0]) == 3 * 7


def test_nothing_on_the_page_reaches_past_the_window(browser):
    _, dom_html = browser
    body = find(Dom(dom_html).root, lambda n: n["tag"] == "body")[0]
    assert int(body["attrs"]["data-viewport"]) == WIDTH
    assert json.loads(body["attrs"]["data-overflow"]) == []


def test_every_chart_has_axis_titles_and_its_legend_outside_the_plot(page):
    _, html = page
    figures = plotly_figures(html.read_text())
    assert {"embedding-map", "cluster-sizes", "group-shares", "method-rounds-1", "method-rounds-2",
            "timings-chart"} <= set(figures)
    for name, fig in figures.items():
        layout = fig["layout"]
        assert layout["xaxis"]["title"]["text"] and layout["yaxis"]["title"]["text"], name
        legend = layout["legend"]
        assert legend["y"] > 1 or legend["x"] > 1, name  # above or right of the plot area, never over it
        assert "width" not in layout, name  # the width follows the page
        assert len(set(layout["colorway"])) >= 12 and "#F0E442" not in layout["colorway"], name
    assert figures["group-shares"]["layout"]["yaxis"]["tickformat"] == ".0%"


def test_a_large_pool_is_mapped_by_a_fixed_sample_that_keeps_the_selected_items():
    n = 7000
    rng = np.random.default_rng(0)
    pool = pl.DataFrame({"source": ["s"] * n, "id": [f"r{i}" for i in range(n)],
                         "map_x": rng.normal(size=n).astype(np.float32), "map_y": rng.normal(size=n).astype(np.float32)})
    few = pool.with_columns(status=pl.when(pl.int_range(n) % 7 == 0).then(pl.lit("selected")).otherwise(pl.lit("x")))
    shown = _map_sample(few)
    assert shown.height == MAP_POINTS == 5000
    assert set(shown.filter(pl.col("status") == "selected")["id"]) == set(few.filter(pl.col("status") == "selected")["id"])
    assert shown["_row"].is_sorted() and shown.equals(_map_sample(few))  # report order; the same on every render
    many = pool.with_columns(status=pl.when(pl.int_range(n) < 6000).then(pl.lit("selected")).otherwise(pl.lit("x")))
    capped = _map_sample(many)
    assert capped.height == 5000 and set(capped["status"]) == {"selected"}  # past the cap: selected items only
    assert _map_sample(pool.head(10).with_columns(status=pl.lit("x"))).height == 10
    assert _map_sample(few.drop("map_x")) is None  # a report made before the map: no map section
