"""The package version: the installed metadata's, so pyproject.toml is its one source."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("curation")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"
