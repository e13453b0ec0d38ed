"""The one plugin registry: built-ins, python specs, installed entry points, one error line."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from curation.exceptions import InvalidParameterError
from curation.registry import load_python_spec
from curation.select.base import Selector, build_selector


def install_plugin(tmp_path, monkeypatch, group: str, name: str, target: str, module: str, source: str) -> None:
    """A real installed distribution (a dist-info with entry_points.txt) on sys.path."""
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
    info = tmp_path / f"{module}_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n{name} = {target}\n")
    monkeypatch.syspath_prepend(str(tmp_path))


def test_unknown_names_of_every_kind_fail_with_one_line_listing_the_known_ones():
    from connectors import load_connector
    from curation.embed import Embedder
    from curation.score import build_scorer
    from curation.select.feedback import build_feedback
    from curation.value.pool import value_method

    cases = [
        (lambda: build_selector("qaud"), r"select\.method='qaud' is not a known selector\. Known: .*quad"),
        (lambda: build_scorer("lenght"), r"quality scorer='lenght' is not a known quality scorer\. Known: .*length"),
        (lambda: build_feedback("proxyloss"), r"select\.feedback='proxyloss' is not a known feedback\. Known: proxy-loss"),
        (lambda: value_method(method="tmc"), r"value\.method='tmc' is not a known value method\. Known: .*tmc-shapley"),
        (lambda: load_connector("ftp"), r"sources\[\]\.kind='ftp' is not a known connector kind\. Known: files"),
        (lambda: Embedder.registry.get("nope", field="embed.model"), r"embed\.model='nope' is not a known embedder\. "
                                                                     r"Known: hashing, sentence-transformers, static-minilm"),
    ]
    for make, message in cases:
        with pytest.raises(InvalidParameterError, match=message) as exc:
            make()
        assert "\n" not in str(exc.value)


def test_python_specs_load_the_named_function_or_say_why_not():
    assert load_python_spec("python:os.path:join", field="f") is __import__("os").path.join
    with pytest.raises(InvalidParameterError, match=r"f='python:os\.path' is not a 'python:module:attribute' spec"):
        load_python_spec("python:os.path", field="f")
    with pytest.raises(InvalidParameterError, match=r"f='python:os\.path:nope' cannot be loaded"):
        load_python_spec("python:os.path:nope", field="f")


def test_an_installed_selector_plugin_is_found_validated_and_in_the_schema(tmp_path, monkeypatch):
    install_plugin(tmp_path, monkeypatch, "curation.selectors", "first-rows", "firstrows:FirstRows", "firstrows", """
        import numpy as np
        from curation.select.base import Selector
        from curation.types import Selection
        from curation.validation import Interval

        class FirstRows(Selector, name="first-rows"):
            '''The first rows of the pool, after skipping some.

            Args:
                skip: rows skipped first.
            '''
            _constraints = {"skip": Interval(0, None, integer=True)}

            def __init__(self, *, skip: int = 0) -> None:
                self.skip = skip

            def _select(self, pool, budget, *, rng):
                return Selection(indices=np.arange(self.skip, self.skip + budget))
        """)
    try:
        assert "first-rows" in Selector.registry.names()
        from curation.recipe import load_recipe, recipe_json_schema
        from curation.types import Pool

        sel = build_selector("first-rows", skip=2)
        pool = Pool(ids=np.arange(10).astype(str), embeddings=np.zeros((10, 2), np.float32),
                    groups=np.zeros(10, int), group_names=("*",))
        assert sel.select(pool, 3, rng=np.random.default_rng(0)).indices.tolist() == [2, 3, 4]
        base = {"name": "p", "sources": [{"name": "s", "path": "x.csv", "text": "t"}]}
        r = load_recipe({**base, "select": {"method": "first-rows", "budget": 3, "skip": 1}})
        assert r.select.params() == {"skip": 1}
        with pytest.raises(Exception, match=r"The 'skip' parameter of FirstRows must be an int in the range \[0, inf\)"):
            load_recipe({**base, "select": {"method": "first-rows", "budget": 3, "skip": -1}})
        alts = {a["properties"]["method"]["const"]: a for a in recipe_json_schema()["properties"]["select"]["oneOf"]}
        assert alts["first-rows"]["properties"]["skip"] == {
            "default": 0, "description": "rows skipped first. (an int in the range [0, inf))", "title": "Skip",
            "type": "integer"}
    finally:
        Selector.registry.pop("first-rows")


def test_a_broken_plugin_fails_with_one_line_not_a_traceback(tmp_path, monkeypatch):
    install_plugin(tmp_path, monkeypatch, "curation.value_methods", "broken", "brokenmod:Nope", "brokenmod",
                   "raise RuntimeError('missing dependency xyz')\n")
    from curation.value.pool import value_method

    with pytest.raises(InvalidParameterError, match=r"value\.method='broken': the value method plugin failed to "
                                                    r"load: missing dependency xyz"):
        value_method(method="broken")


def test_a_lazy_builtin_is_listed_at_once_and_imported_only_when_looked_up(tmp_path, monkeypatch):
    import sys

    from curation.registry import Registered, Registry

    class Base(Registered):
        registry = Registry("widget", "curation.test_widgets", lazy={"slow": "slow_widget"})

    monkeypatch.setitem(sys.modules, "base_for_slow_widget", sys.modules[__name__])
    monkeypatch.setattr(sys.modules[__name__], "WidgetBase", Base, raising=False)
    (tmp_path / "slow_widget.py").write_text(
        "from base_for_slow_widget import WidgetBase\n\nclass Slow(WidgetBase, name='slow'):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "slow" in Base.registry.names() and "slow" in Base.registry
    assert "slow_widget" not in sys.modules  # listing and membership import nothing
    assert Base.registry.get("slow", field="widget.kind").__name__ == "Slow"
    assert "slow_widget" in sys.modules
    monkeypatch.delitem(sys.modules, "slow_widget")
