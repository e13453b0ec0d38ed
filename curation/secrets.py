"""Secrets stay out of everything the build writes: recipes name them, a secret store holds them.

A recipe string may use ``${NAME}`` for a value held in the environment, e.g.
``path: s3://reader:${S3_PASSWORD}@minio.local/bucket/data.parquet``, or ``${kind:name}`` for a
value from a registered secret store (:func:`register_resolver`): the Prefect flow registers
``prefect``, so ``${prefect:pg-password}`` is the Prefect Secret block ``pg-password``. The placeholder is what
the recipe, the manifest, the stage records, Prefect's parameters and every message carry; it is
expanded (:func:`expand`) only where a connector opens the source. :func:`redact` turns any
expanded secret back into its placeholder and masks a literal ``user:password@`` in a URL, so
text that went through a connector (paths in fingerprints, error messages, logs) is safe to
write. A literal password in a recipe URL is refused at validation (:func:`check_no_literal_password`):
it would have to be stored somewhere to be used later.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

# ${NAME} (an environment variable) or ${kind:name} (a registered resolver, e.g. a Prefect block)
PLACEHOLDER = re.compile(r"\$\{(?:(?P<kind>[a-z][a-z0-9-]*):)?(?P<name>[A-Za-z0-9_][A-Za-z0-9_.-]*)\}")
# scheme://user:password@ where the password is not a placeholder
URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]+:)(?P<password>[^\s@/]+)(?P<tail>@)")
MASK = "***"

_expanded: dict[str, str] = {}  # secret value -> its placeholder, for every value expand() produced
_resolvers: dict[str, Callable[[str], str]] = {}


def register_resolver(kind: str, resolve: Callable[[str], str]) -> None:
    """Let ``${kind:name}`` placeholders be expanded by ``resolve(name)`` (which raises
    ``KeyError`` with a one-line reason when ``name`` does not exist)."""
    _resolvers[kind] = resolve


def expand(text: str, *, field: str) -> str:
    """``text`` with each placeholder replaced by its value (remembered for :func:`redact`):
    ``${NAME}`` from the environment, ``${kind:name}`` from the resolver registered for ``kind``.

    Raises:
        KeyError: a placeholder whose value does not exist, or whose kind has no resolver (the
            message names the field, the placeholder and what to do).
    """
    def value(m: re.Match) -> str:
        kind, name = m.group("kind"), m.group("name")
        if kind is None:
            if name not in os.environ:
                raise KeyError(f"{field} uses ${{{name}}}, which is not set in the environment: export {name}=...")
            secret = os.environ[name]
        elif kind in _resolvers:
            try:
                secret = _resolvers[kind](name)
            except KeyError as e:
                raise KeyError(f"{field} uses {m.group(0)}: {e.args[0] if e.args else 'not found'}") from None
        else:
            known = ", ".join(f"${{{k}:...}}" for k in sorted(_resolvers)) or "none in this process"
            raise KeyError(f"{field} uses {m.group(0)}, but no secret store '{kind}' is registered (registered: "
                           f"{known}); ${{prefect:...}} works in `curate build` and the Prefect flow, "
                           "${NAME} reads the environment")
        if secret:
            _expanded[secret] = m.group(0)
        return secret

    return PLACEHOLDER.sub(value, text)


def redact(text: str) -> str:
    """``text`` with expanded secrets put back as ``${NAME}`` and URL passwords masked."""
    for secret, placeholder in sorted(_expanded.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(secret, placeholder)

    def mask(m: re.Match) -> str:
        pw = m.group("password")
        return m.group(0) if PLACEHOLDER.fullmatch(pw) else f"{m.group('head')}{MASK}{m.group('tail')}"

    return URL_PASSWORD.sub(mask, text)


def redact_obj(obj: Any) -> Any:
    """:func:`redact` applied to every string of a JSON-like structure (keys included)."""
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, dict):
        return {redact_obj(k): redact_obj(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact_obj(v) for v in obj]
    return obj


def check_no_literal_password(text: str) -> str:
    """``text`` unchanged, or a ValueError when it holds a literal ``user:password@`` URL."""
    for m in URL_PASSWORD.finditer(text):
        if not PLACEHOLDER.fullmatch(m.group("password")):
            shown = f"{m.group('head')}{MASK}{m.group('tail')}"
            raise ValueError(f"holds a password in the URL ({shown}...); keep it in an environment variable and "
                             f"write {m.group('head')}${{NAME}}@... (the recipe, the manifest and Prefect then "
                             "only ever see the placeholder)")
    return text
