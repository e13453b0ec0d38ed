"""Exceptions with messages that name the field, the value and the fix."""

from __future__ import annotations


class CurationError(Exception):
    """Base class of every error this package raises on purpose."""


class InvalidParameterError(CurationError, ValueError):
    """A hyperparameter or recipe value is out of its allowed range or set."""


class DataError(CurationError, ValueError):
    """The input data cannot be used as the recipe describes (missing column, empty source, ...)."""


class RecipeError(CurationError, ValueError):
    """The recipe failed validation; the message lists every offending field."""


class DatasetLocked(CurationError):
    """Another build holds the dataset's lock (raised only when not waiting for it)."""


class SourceReadError(CurationError):
    """Reading a source failed in a way that may pass (network, storage): worth a retry.

    Raised with the stage and source named and the cause in the message; the flow retries the
    ingest task on it (and only on it: a bad recipe or bad data is never retried).
    """
