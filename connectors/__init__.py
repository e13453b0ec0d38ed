"""Pluggable sources. ``load_connector(kind)`` finds built-ins first, then entry points
(group ``curation.connectors``), through the one plugin registry (:mod:`curation.registry`)."""

from __future__ import annotations

from typing import Any

from connectors.base import Connector
from connectors.files import FilesConnector
from connectors.huggingface import HuggingFaceConnector

__all__ = ["Connector", "FilesConnector", "HuggingFaceConnector", "SqlConnector", "known_connectors", "load_connector"]

GROUP = "curation.connectors"


def known_connectors() -> list[str]:
    """Every connector kind: built-in and installed plugins."""
    return Connector.registry.names()


def load_connector(kind: str, *, field: str = "sources[].kind") -> type[Connector]:
    """The Connector class registered as ``kind``.

    Raises:
        InvalidParameterError: unknown kind (the message lists the known ones), or a plugin that
            failed to import or is not a Connector (one broken plugin must not take the host down).
    """
    from curation.exceptions import InvalidParameterError

    cls = Connector.registry.get(kind, field=field)
    if not (isinstance(cls, type) and issubclass(cls, Connector)):
        raise InvalidParameterError(f"{field}={kind!r}: the plugin is {cls!r}, not a Connector subclass")
    return cls


def __getattr__(name: str) -> Any:
    # the SQL connector imports SQLAlchemy (0.3 s): only a build with an SQL source pays for it
    if name == "SqlConnector":
        from connectors.sql import SqlConnector

        return SqlConnector
    raise AttributeError(f"module 'connectors' has no attribute {name!r}")
