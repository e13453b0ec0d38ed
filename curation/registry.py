"""One registry for every pluggable kind: selectors, quality scorers, feedbacks, embedders,
value methods and connectors.

A kind is a base class with a :class:`Registry`; a subclass declared with ``name="my-method"``
registers itself (:class:`Registered`). ``registry.get(name)`` finds, in this order:

1. a built-in or already imported class registered under ``name``;
2. a ``python:module:attribute`` spec (your own class or function, imported on demand);
3. an installed plugin: an entry point named ``name`` in the kind's group (e.g.
   ``[project.entry-points."curation.selectors"] my-method = "pkg.mod:MySelector"``).

Anything else raises one :class:`~curation.exceptions.InvalidParameterError` line that names
the field, the value and every known name. See docs/architecture.md#plugins.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from importlib.metadata import entry_points
from typing import Any, ClassVar

from curation.exceptions import InvalidParameterError

PYTHON_PREFIX = "python:"


def load_python_spec(spec: str, *, field: str) -> Any:
    """The object a ``module:attribute`` (or ``python:module:attribute``) spec names.

    Raises:
        InvalidParameterError: malformed spec, or the module or attribute cannot be imported.
    """
    target = spec.removeprefix(PYTHON_PREFIX)
    module, sep, attr = target.partition(":")
    if not sep or not module or not attr:
        raise InvalidParameterError(f"{field}={spec!r} is not a 'python:module:attribute' spec "
                                    "(e.g. python:my_package.hooks:score)")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise InvalidParameterError(f"{field}={spec!r} cannot be loaded: {exc}") from None


class Registry:
    """Names -> classes of one pluggable kind.

    Args:
        kind: what the names name, for messages ("selector", "quality scorer", ...).
        group: the entry-point group plugins register under.
        builtins: a module whose import registers the built-in classes (imported on first lookup,
            so a base class's module need not import every implementation).
        python_specs: whether ``python:module:attribute`` specs are accepted.
        lazy: built-in names whose module (given) is imported only when the name is looked up:
            for an implementation whose dependencies are slow to import (the SQL connector's
            SQLAlchemy, 0.3 s), so that using another one does not pay for it.
    """

    def __init__(self, kind: str, group: str, *, builtins: str | None = None, python_specs: bool = False,
                 lazy: dict[str, str] | None = None) -> None:
        self.kind, self.group, self.builtins, self.python_specs = kind, group, builtins, python_specs
        self.lazy = dict(lazy or {})
        self._classes: dict[str, Any] = {}

    def add(self, name: str, obj: Any) -> None:
        self._classes[name] = obj

    def _load_builtins(self) -> None:
        if self.builtins:
            importlib.import_module(self.builtins)

    def builtin(self) -> dict[str, Any]:
        """The registered (built-in and imported) classes by name, the lazy ones included."""
        self._load_builtins()
        for module in self.lazy.values():
            importlib.import_module(module)
        return dict(self._classes)

    def names(self) -> list[str]:
        """Every known name: registered, and installed plugins of the entry-point group."""
        self._load_builtins()
        names = set(self._classes) | set(self.lazy) | {ep.name for ep in entry_points(group=self.group)}
        if self.python_specs:  # "python" is the wrapper of python specs, not a name to give
            return sorted(names - {"python"}) + [f"{PYTHON_PREFIX}module:function"]
        return sorted(names)

    def __contains__(self, name: str) -> bool:
        self._load_builtins()
        return name in self._classes or name in self.lazy or name in {ep.name for ep in entry_points(group=self.group)}

    def __iter__(self) -> Iterator[str]:
        return iter(self.builtin())

    def __getitem__(self, name: str) -> Any:
        return self.get(name, field=self.kind)

    def pop(self, name: str) -> Any:
        """Unregister ``name`` (tests that register a throwaway class clean up with this)."""
        return self._classes.pop(name)

    def get(self, name: str, *, field: str) -> Any:
        """The class (or function) registered as ``name``; see the module docstring.

        ``field`` is the recipe field the name came from, for the message (e.g. ``select.method``).
        """
        self._load_builtins()
        if not isinstance(name, str):
            raise InvalidParameterError(f"{field} must be a {self.kind} name; got {name!r}")
        if name not in self._classes and name in self.lazy:
            importlib.import_module(self.lazy[name])  # registers the class
        if name in self._classes:
            return self._classes[name]
        if self.python_specs and name.startswith(PYTHON_PREFIX):
            return load_python_spec(name, field=field)
        eps = {ep.name: ep for ep in entry_points(group=self.group)}
        if name in eps:
            try:
                obj = eps[name].load()
            except Exception as exc:  # one broken plugin must not take the host down with a traceback
                raise InvalidParameterError(f"{field}={name!r}: the {self.kind} plugin failed to load: {exc}") from None
            self._classes[name] = obj
            return obj
        raise InvalidParameterError(f"{field}={name!r} is not a known {self.kind}. Known: {', '.join(self.names())}.")


    def build(self, spec: str | dict[str, Any], *, field: str) -> Any:
        """An instance from a recipe value: ``"name"``, ``{name: ..., <options>}``,
        ``"python:module:function"`` or ``{python: "module:function", <options>}``.

        A python spec names your function; it is wrapped by the class registered as ``python``
        (which receives the spec and the options). Bad options raise one line naming them.
        """
        if isinstance(spec, str):
            spec = {"python": spec} if spec.startswith(PYTHON_PREFIX) else {"name": spec}
        if not isinstance(spec, dict):
            raise InvalidParameterError(f"{field} is a {self.kind} name or a mapping; got {spec!r}")
        opts = dict(spec)
        if "python" in opts:
            name, args = "python", (opts.pop("python"),)
        else:
            name, args = opts.pop("name", None), ()
            if name == "python":
                raise InvalidParameterError(f"{field}: give the function as python: 'module:function'")
        cls = self.get(name, field=field)
        try:
            return cls(*args, **opts)
        except TypeError as exc:
            raise InvalidParameterError(f"{field} {name!r}: {exc}") from None


class Registered:
    """Mixin: ``class X(Base, name="x")`` registers X in ``Base.registry`` under "x"."""

    registry: ClassVar[Registry]
    name: ClassVar[str] = ""

    def __init_subclass__(cls, *, name: str | None = None, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if name is not None:
            cls.name = name
            cls.registry.add(name, cls)
