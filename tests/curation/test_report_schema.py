"""The report contract (curation/report_schema.py) and how selectors plug into the report."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import curation
from curation.plots import to_figure
from curation.report_schema import PlotSpec, status_counts, validate_report
from curation.select import QuadSelector, Selector
from curation.types import Pool, Selection

ROOT = Path(curation.__file__).parent


def good_report() -> pl.DataFrame:
    return pl.DataFrame({
        "id": ["a", "b", "c", "d"], "source": ["s"] * 4, "group": ["g"] * 4,
        "cluster": [0, 1, None, None], "selected": [True, False, False, False],
        "selected_rank": [0, None, None, None],
        "status": ["selected", "not_selected", "reference", "skipped"],
        "reason_code": ["selected", "chunk_rejected", "reference_file", "skipped_invalid_utf8"],
        "reason": ["r"] * 4,
    })


def test_a_valid_report_passes_and_is_counted_by_status():
    report = validate_report(good_report())
    assert status_counts(report) == {"candidates": 4, "pool": 2, "selected": 1, "not_selected": 1,
                                     "reference": 1, "skipped": 1}


@pytest.mark.parametrize("change, message", [
    ({"status": ["selected", "not_selected", "reference", "dropped"]}, "status must be one of"),
    ({"status": ["selected", "not_selected", "reference", None]}, "status must be one of"),
    ({"selected": [True, True, False, False]}, "selected must equal"),
    ({"selected_rank": [0, 1, None, None]}, "selected_rank must be set exactly"),
    ({"cluster": [0, 1, 2, None]}, "cluster must be null exactly"),
    ({"reason_code": ["selected", "Chunk rejected", "reference_file", "skipped_x"]}, "malformed reason codes"),
])
def test_a_report_breaking_the_contract_is_rejected(change, message):
    bad = good_report().with_columns(*[pl.Series(k, v, dtype=good_report().schema[k]) for k, v in change.items()])
    with pytest.raises(ValueError, match=message):
        validate_report(bad)


def test_a_missing_contract_column_is_rejected():
    with pytest.raises(ValueError, match="no column 'reason_code'"):
        validate_report(good_report().drop("reason_code"))


def _pool(n: int = 6) -> Pool:
    return Pool(ids=np.arange(n).astype(str), embeddings=np.zeros((n, 2), np.float32),
                groups=np.zeros(n, int), group_names=("*",), clusters=np.zeros(n, int))


class _Undeclared(Selector):  # not registered (no name=): lives only in this test
    def __init__(self, *, columns: dict | None = None, codes: list | None = None) -> None:
        self.columns, self.codes = columns, codes

    def _select(self, pool, budget, *, rng):
        return Selection(indices=np.arange(budget), columns=self.columns or {},
                         reason_codes=None if self.codes is None else np.array(self.codes, dtype=object))


@pytest.mark.parametrize("kw, message", [
    ({"columns": {"mystery": np.zeros(6)}}, "missing from its report_columns"),
    ({"columns": {"status": np.zeros(6)}}, "report schema already defines"),
    ({"codes": ["selected", "selected", "weird", "not_selected", "not_selected", "not_selected"]},
     "missing from its reason_codes"),
    ({"codes": ["selected", "selected"]}, "2 reason codes for a pool of 6"),
])
def test_selectors_must_declare_what_they_add_to_the_report(kw, message):
    with pytest.raises(AssertionError, match=message):
        _Undeclared(**kw).select(_pool(), 2, rng=np.random.default_rng(0))


def test_every_registered_selector_declares_described_report_columns_and_codes():
    import curation.select  # noqa: F401  (registers the built-in selectors)

    for cls in Selector.registry.builtin().values():
        for name, meaning in {**cls.report_columns, **cls.reason_codes}.items():
            assert name.isidentifier() and name.islower() and meaning.strip(), (cls.name, name)


def test_quad_plot_takes_tau_from_the_build_params_not_a_copied_default():
    report = good_report().with_columns(pl.Series("probe_score", [0.5, 0.1, None, None]))
    default = QuadSelector.report_params({"method": "quad", "budget": 3})
    assert default["tau"] == QuadSelector().tau  # the constructor's default, read from the signature
    [spec] = QuadSelector.report_plots(report, {}, QuadSelector.report_params({"method": "quad", "tau": 0.25}))
    assert "tau = 0.25" in spec.title
    # accepted vs rejected comes from the reason codes
    assert spec.series["accepted chunks"].tolist() == [0.5] and spec.series["rejected chunks"].tolist() == [0.1]
    assert Selector.report_plots(report, {}, {}) == [] and Selector.summary_section({}, {}, {}) == []


def test_to_figure_draws_each_plot_kind():
    figs = [to_figure(PlotSpec("bar", "b", {"s": [1, 2]}, categories=["x", "y"])),
            to_figure(PlotSpec("histogram", "h", {"s": [1.0, 2.0, 2.5]})),
            to_figure(PlotSpec("line", "l", {"s": ([1, 10], [0.5, 0.2])}, logx=True))]
    assert [f.data[0].type for f in figs] == ["bar", "histogram", "scatter"]
    with pytest.raises(ValueError, match="unknown plot kind"):
        to_figure(PlotSpec("pie", "p", {}))  # type: ignore[arg-type]


# Method names and method-specific columns/parameters/facts that must not appear in the generic report
# code (as a string literal or a variable name): those belong to the selectors' hooks. ("round" is
# left out: it is also the builtin.)
METHOD_WORDS = {"quad", "kmq", "kmq-iterative", "group-adaptive", "value-threshold", "random", "stratified",
                "tau", "probe_score", "scorer", "scorer_calls", "equity", "curves", "allocation_step", "quality",
                "cluster_weight", "chunk_rejected"}


@pytest.mark.parametrize("module", ["report.py", "html_report.py"])
def test_report_modules_have_no_per_method_code(module):
    source = (ROOT / module).read_text()
    tree = ast.parse(source)
    # whole-literal matches, so prose in docstrings ("Quad's probes") does not count
    literals = {node.value.lower() for node in ast.walk(tree) if isinstance(node, ast.Constant)
                and isinstance(node.value, str)}
    names = {node.id.lower() for node in ast.walk(tree) if isinstance(node, ast.Name)}
    assert not (literals & METHOD_WORDS), literals & METHOD_WORDS
    assert not (names & METHOD_WORDS)
    # and nothing reads meaning out of the human reason text
    for pattern in ('"reason").str', "REFERENCE_REASON", "starts_with", '"reference:'):
        assert pattern not in source, pattern


def test_no_code_parses_reason_text():
    for path in [*ROOT.rglob("*.py"), *(ROOT.parent / "flows").rglob("*.py")]:
        src = path.read_text()
        assert "REFERENCE_REASON" not in src and 'col("reason").str' not in src, path
