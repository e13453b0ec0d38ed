"""The ``curate`` command line.

    curate build RECIPE [--out ROOT] [--set a.b=c ...]
    curate report DATASET_DIR [--version vNNNN] [--sql "SELECT ..."] [--format table|csv|json]

``build`` prints the summary, then the version directory as the last line of stdout.
Errors in the recipe or the data print one clear message (no traceback) and exit with 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

EXIT_USAGE = 2
# Set before Prefect or the model load: no hub downloads, no telemetry from the temporary server.
QUIET_DEFAULTS = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
}


def _build(args: argparse.Namespace) -> int:
    from curation.recipe import load_recipe

    overrides = list(args.set or [])
    if args.out:
        overrides.append(f"output.root={args.out}")
    recipe = load_recipe(args.recipe, overrides)  # before importing Prefect: bad recipes fail in a blink

    from curation.builder import preflight
    from curation.report import format_summary, load_manifest

    preflight(recipe)
    from flows.curate import curate

    hide_tracebacks_of_user_errors()

    version_dir = curate(recipe.model_dump(mode="json"))
    manifest = load_manifest(os.path.dirname(version_dir), os.path.basename(version_dir))
    print(format_summary(manifest))
    print(version_dir)
    return 0


class _UserErrorFilter(logging.Filter):
    """Log expected errors (bad recipe or data) as one line: the CLI prints the fix anyway."""

    def filter(self, record: logging.LogRecord) -> bool:
        from curation.exceptions import CurationError

        if record.exc_info and isinstance(record.exc_info[1], CurationError):
            record.exc_info, record.exc_text = None, None
        return True


def hide_tracebacks_of_user_errors() -> None:
    """Prefect logs a failed task with its traceback; for a CurationError that is noise."""
    loggers = [logging.root] + [logging.getLogger(n) for n in ("prefect", "prefect.flow_runs", "prefect.task_runs")]
    for logger in loggers:
        for handler in logger.handlers:
            if not any(isinstance(f, _UserErrorFilter) for f in handler.filters):
                handler.addFilter(_UserErrorFilter())


def _report(args: argparse.Namespace) -> int:
    from curation.report import format_summary, format_table, load_manifest, query

    if args.sql:
        df = query(args.dataset_dir, args.sql, args.version)
        if args.format == "csv":
            sys.stdout.write(df.write_csv())
        elif args.format == "json":
            print(json.dumps(df.to_dicts(), default=str, indent=None))
        else:
            print(format_table(df))
        return 0
    if args.html:
        from curation.html_report import render_html

        Path(args.html).write_text(render_html(args.dataset_dir, args.version), encoding="utf-8")
        print(args.html)
        return 0
    manifest = load_manifest(args.dataset_dir, args.version)
    if args.format == "json":
        print(json.dumps(manifest["summary"], default=str))
    elif args.format == "csv":
        import polars as pl

        sys.stdout.write(pl.DataFrame(manifest["summary"]["groups"]).write_csv())
    else:
        print(format_summary(manifest, max_groups=10_000))
    return 0


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="curate", description="Build diverse, equitable training sets.")
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="run a recipe and publish a new version")
    b.add_argument("recipe", help="path to the recipe YAML")
    b.add_argument("--out", help="output root (overrides output.root)")
    b.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a recipe field, e.g. select.budget=500")
    b.set_defaults(func=_build)
    r = sub.add_parser("report", help="summary of a version, or SQL over its report")
    r.add_argument("dataset_dir", help="<output.root>/<name>")
    r.add_argument("--version", help="vNNNN (default: LATEST)")
    r.add_argument("--sql", help="polars SQL over the tables `report` and `selected`")
    r.add_argument("--format", choices=("table", "csv", "json"), default="table")
    r.add_argument("--html", metavar="PATH", help="write an HTML report (tables and plots) to PATH")
    r.set_defaults(func=_report)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    for key, value in QUIET_DEFAULTS.items():
        os.environ.setdefault(key, value)
    from curation.exceptions import CurationError

    try:
        return args.func(args)
    except (CurationError, FileNotFoundError, KeyError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"error: {msg}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # polars SQL errors and the like: one line, not a traceback
        if type(exc).__module__.startswith("polars"):
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
