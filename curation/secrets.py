"""Secrets stay out of everything the build writes: recipes name them, the environment holds them.

A recipe string may use ``${NAME}`` for a value held in the environment, e.g.
``path: s3://reader:${S3_PASSWORD}@minio.local/bucket/data.parquet``. The placeholder is what
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
from typing import Any

PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# scheme://user:password@ where the password is not a placeholder
URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]+:)(?P<password>[^\s@/]+)(?P<tail>@)")
MASK = "***"

_expanded: dict[str, str] = {}  # secret value -> its placeholder, for every value expand() produced


def expand(text: str, *, field: str) -> str:
    """``text`` with each ``${NAME}`` replaced by the environment's value (remembered for :func:`redact`).

    Raises:
        KeyError: a placeholder names a variable the environment does not have (the message
            names the field and the variable).
    """
    def value(m: re.Match) -> str:
        name = m.group(1)
        if name not in os.environ:
            raise KeyError(f"{field} uses ${{{name}}}, which is not set in the environment: export {name}=...")
        secret = os.environ[name]
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
