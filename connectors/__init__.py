"""Pluggable sources. ``load_connector(kind)`` finds built-ins first, then entry points."""

from __future__ import annotations

from importlib.metadata import entry_points

from connectors.base import Connector
from connectors.files import FilesConnector

__all__ = ["Connector", "FilesConnector", "known_connectors", "load_connector"]

GROUP = "curation.connectors"


def known_connectors() -> list[str]:
    """Every connector kind: built-in and installed plugins."""
    return sorted(set(Connector.registry) | {ep.name for ep in entry_points(group=GROUP)})


def load_connector(kind: str) -> type[Connector]:
    """The Connector class registered as ``kind``.

    Raises:
        KeyError: unknown kind (the message lists the known ones).
        ImportError: a plugin that failed to import (one broken plugin must not take the host down).
    """
    if kind in Connector.registry:
        return Connector.registry[kind]
    eps = {ep.name: ep for ep in entry_points(group=GROUP)}
    if kind not in eps:
        raise KeyError(f"Unknown connector kind {kind!r}. Known kinds: {', '.join(known_connectors())}")
    try:
        cls = eps[kind].load()
    except Exception as exc:
        raise ImportError(f"Connector plugin {kind!r} failed to load: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Connector)):
        raise ImportError(f"Connector plugin {kind!r} is {cls!r}, not a Connector subclass")
    return cls
