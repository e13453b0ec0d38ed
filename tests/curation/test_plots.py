"""PlotSpec -> plotly: every kind draws what it is given, in the house style (curation/plots.py)."""

from __future__ import annotations

import itertools

import numpy as np
import plotly.offline
import pytest

from curation.plots import PALETTE, embedding_map, figure_html, short_labels, to_figure
from curation.report_schema import PlotSpec


def json_of(fig) -> dict:
    return fig.to_plotly_json()


def test_bar_spec_gives_one_trace_per_series_over_categorical_clusters():
    spec = PlotSpec("bar", "t", {"pool": [10, 20, 30], "selected": np.array([3, 2, 1])}, categories=["0", "1", "10"],
                    xlabel="cluster", ylabel="items")
    fig = json_of(to_figure(spec))
    assert [t["name"] for t in fig["data"]] == ["pool", "selected"]
    assert fig["data"][1]["y"] == [3.0, 2.0, 1.0] and fig["data"][0]["x"] == ["0", "1", "10"]
    assert fig["layout"]["xaxis"]["type"] == "category"  # cluster 10 is a name, not x = 10
    assert [t["marker"]["color"] for t in fig["data"]] == list(PALETTE[:2])
    assert fig["layout"]["xaxis"]["title"]["text"] == "cluster" and fig["layout"]["yaxis"]["title"]["text"] == "items"
    assert fig["layout"]["barmode"] == "group"
    assert json_of(to_figure(PlotSpec("bar", "t", {"a": [1]}, categories=["x"], stacked=True)))["layout"]["barmode"] \
        == "stack"


def test_long_category_labels_are_cut_on_the_axis_and_whole_in_the_hover():
    long = ["a very long group name that goes on|and on", "a very long group name that goes on|and further", "b"]
    fig = json_of(to_figure(PlotSpec("bar", "t", {"share": [0.5, 0.3, 0.2]}, categories=long, yformat=".0%")))
    trace = fig["data"][0]
    assert all(len(x) <= 22 for x in trace["x"]) and len(set(trace["x"])) == 3  # cut, still three bars
    assert trace["customdata"] == long and "%{customdata}" in trace["hovertemplate"]
    assert fig["layout"]["yaxis"]["tickformat"] == ".0%"
    assert short_labels(["short"]) == ["short"]


def test_histogram_spec_overlays_series_on_shared_bins_as_shares():
    rng = np.random.default_rng(0)
    fig = json_of(to_figure(PlotSpec("histogram", "h", {"selected": rng.normal(size=50), "not selected": [],
                                                         "others": rng.normal(size=200).tolist()})))
    assert [t["name"] for t in fig["data"]] == ["selected (n=50)", "others (n=200)"]
    assert {t["bingroup"] for t in fig["data"]} == {"shared"} and {t["histnorm"] for t in fig["data"]} == {"probability"}
    assert len(fig["data"][1]["x"]) == 200 and fig["layout"]["barmode"] == "overlay"
    assert "not selected" in fig["layout"]["legend"]["title"]["text"]  # an empty series is named, not drawn
    assert fig["layout"]["xaxis"]["title"]["text"] and fig["layout"]["yaxis"]["tickformat"] == ".0%"


def test_line_spec_draws_lines_and_markers_in_their_series_colour_on_a_log_axis():
    grid = np.geomspace(1, 1000, 20)
    fig = json_of(to_figure(PlotSpec("line", "c", {"g1": (grid, grid ** -0.5), "g2": (grid, grid ** -0.3)},
                                     markers={"g1": ([58.8], [0.13])}, logx=True, xlabel="n", ylabel="error")))
    lines = [t for t in fig["data"] if t["mode"] == "lines"]
    [dots] = [t for t in fig["data"] if t["mode"] == "markers"]
    assert [t["name"] for t in lines] == ["g1", "g2"] and len(lines[0]["x"]) == 20
    assert dots["x"] == [58.8] and dots["marker"]["color"] == lines[0]["line"]["color"] == PALETTE[0]
    assert dots["showlegend"] is False  # one legend entry per series
    assert fig["layout"]["xaxis"]["type"] == "log" and fig["layout"]["yaxis"]["title"]["text"] == "error"


def test_unknown_kind_is_an_error():
    with pytest.raises(ValueError, match="unknown plot kind"):
        to_figure(PlotSpec("pie", "p", {}))  # type: ignore[arg-type]


def test_every_chart_keeps_its_legend_outside_the_plot_area_and_its_width_free():
    for spec in (PlotSpec("bar", "b", {"s": [1, 2]}, categories=["x", "y"]),
                 PlotSpec("histogram", "h", {"s": [1.0, 2.0]}), PlotSpec("line", "l", {"s": ([1, 2], [3, 4])})):
        layout = json_of(to_figure(spec))["layout"]
        assert layout["legend"]["y"] > 1 and layout["legend"]["yanchor"] == "bottom"  # above the plot area
        assert "width" not in layout and layout["autosize"] is True


def _lab(hex_colour: str, cvd: np.ndarray) -> np.ndarray:
    """CIELAB of a colour as seen with a colour-vision deficiency (Machado et al. 2009 matrices)."""
    c = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)]) / 255
    c = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    c = np.clip(cvd @ c, 0, 1)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ c
    f = np.cbrt(xyz / [0.95047, 1.0, 1.08883])
    f = np.where(xyz / [0.95047, 1.0, 1.08883] > 0.008856, f, 7.787 * xyz / [0.95047, 1.0, 1.08883] + 16 / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


VISION = {
    "normal": np.eye(3),
    "deuteranopia": np.array([[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413],
                              [-0.011820, 0.042940, 0.968881]]),
    "protanopia": np.array([[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216],
                            [-0.003882, -0.048116, 1.051998]]),
    "tritanopia": np.array([[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602],
                            [0.004733, 0.691367, 0.303900]]),
}


@pytest.mark.parametrize("vision", VISION)
def test_palette_has_twelve_plus_colours_that_stay_apart_with_colour_blindness(vision):
    assert len(set(PALETTE)) >= 12
    labs = [_lab(c, VISION[vision]) for c in PALETTE]
    closest = min(np.linalg.norm(a - b) for a, b in itertools.combinations(labs, 2))
    assert closest > 12, closest  # CIE76 distance: clearly different marks, not shades of one another


def test_no_palette_colour_is_pale_on_white():
    def luminance(h):
        c = np.array([int(h[i:i + 2], 16) for i in (1, 3, 5)]) / 255
        c = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
        return float(c @ [0.2126, 0.7152, 0.0722])

    assert "#F0E442" not in PALETTE  # Okabe–Ito's yellow
    assert min(1.05 / (luminance(c) + 0.05) for c in PALETTE) >= 2.0  # WCAG contrast against white


def test_embedding_map_shows_each_point_once_and_switches_colourings_with_buttons():
    rng = np.random.default_rng(1)
    n = 300
    sel = rng.random(n) < 0.3
    clusters = rng.integers(0, 5, n)
    groups = rng.choice(["en", "fr", "a group name long enough to be cut in the legend"], n)
    fig = json_of(embedding_map(rng.normal(size=n), rng.normal(size=n), sel, [f"item {i}" for i in range(n)],
                                {"cluster": clusters, "group": groups}))
    shown = [t for t in fig["data"] if t["visible"] is True]
    hidden = [t for t in fig["data"] if t["visible"] is False]
    assert sum(len(t["x"]) for t in shown) == sum(len(t["x"]) for t in hidden) == n
    assert sorted(h for t in shown for h in t["hovertext"]) == sorted(f"item {i}" for i in range(n))
    assert {t["meta"]["colour_by"] for t in shown} == {"cluster"}
    picked = [t for t in shown if t["meta"]["selected"]]
    assert sum(len(t["x"]) for t in picked) == sel.sum()
    assert all(t["marker"]["size"] > u["marker"]["size"] and t["marker"]["line"]["width"] > 0
               for t in picked for u in shown if not u["meta"]["selected"])
    # selected traces come after every not-selected one: drawn on top
    order = [t["meta"]["selected"] for t in shown]
    assert order == sorted(order)
    buttons = fig["layout"]["updatemenus"][0]["buttons"]
    assert [b["label"] for b in buttons] == ["colour by cluster", "colour by group"]
    by_group = buttons[1]["args"][0]["visible"]
    assert [t["meta"]["colour_by"] == "group" for t in fig["data"]] == by_group
    assert max(len(t["name"]) for t in fig["data"]) <= 22


def test_figure_html_inlines_plotly_only_when_asked_and_keeps_the_div_id():
    fig = to_figure(PlotSpec("bar", "b", {"s": [1, 2]}, categories=["x", "y"]))
    js = plotly.offline.get_plotlyjs()[:300]
    first, later = figure_html(fig, "first-chart", include_js=True), figure_html(fig, "next", include_js=False)
    assert first.count(js) == 1 and js not in later
    assert 'id="first-chart"' in first and 'id="next"' in later
    for html in (first, later):
        assert "cdn.plot.ly" not in html.replace(plotly.offline.get_plotlyjs(), "") and "<script src" not in html
        assert '"responsive": true' in html
