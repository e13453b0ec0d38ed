"""The ``curate`` command line (typer; rich formats ``--help``).

    curate build RECIPE [--out ROOT] [--set a.b=c ...] [--force] [--no-wait] [--prefect/--no-prefect]
    curate report DATASET_DIR [--version vNNNN] [--sql "SELECT ..."] [--format table|csv|json] [--html PATH]
    curate schedule RECIPE --cron "0 3 * * *" [--name NAME]
    curate deploy RECIPE --pool NAME [--cron "0 3 * * *"] [--name NAME]
    curate schema
    curate --version

``build`` prints the summary, then the version directory as the last line of stdout.
Errors in the recipe, the data or the command line print one line starting ``error:`` on
stderr (no traceback) and exit with 2.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a Ctrl-C
# Set before Prefect or the model load: no hub downloads, no telemetry from the temporary server,
# and DO_NOT_TRACK turns off Prefect's client-side telemetry (and its first-run notice).
QUIET_DEFAULTS = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
}

# Epilogs: typer's rich help joins single line breaks, so examples are separated by blank lines.
BUILD_EXAMPLES = """Examples:

  curate build examples/quickstart.yaml

  curate build examples/tabular.yaml --out /tmp/out --set select.budget=500 --set seed=1
"""
REPORT_EXAMPLES = """Examples:

  curate report out/instruction-mix

  curate report out/instruction-mix --version v0001 --format json

  curate report out/instruction-mix --sql "SELECT task, COUNT(*) n FROM selected GROUP BY task" --format csv

  curate report out/instruction-mix --html report.html
"""
SCHEDULE_EXAMPLES = """Examples:

  curate schedule examples/quickstart.yaml --cron "0 3 * * *"

  PREFECT_API_URL=http://127.0.0.1:4200/api curate schedule recipe.yaml --cron "0 */6 * * *" --name six-hourly
"""
SCHEMA_EXAMPLES = """Examples:

  curate schema > recipe.schema.json
"""
MAIN_EXAMPLES = """Examples:

  curate build examples/quickstart.yaml

  curate report out/instruction-mix-quick --html report.html

  curate schema
"""


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


# pretty_exceptions off: an unexpected error should show a plain traceback, a user error one line
# (main() turns those into `error: ...`); rich would print a multi-line framed panel for both.
app = typer.Typer(
    name="curate",
    help="Build diverse, equitable training sets.",
    epilog=MAIN_EXAMPLES,
    add_completion=False,
    no_args_is_help=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        import curation

        print(f"curate {curation.__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="print the version and exit")
    ] = False,
) -> None:
    """Build diverse, equitable training sets."""


@app.command("build", help="Run a recipe and publish a new version.", epilog=BUILD_EXAMPLES)
def _build(
    recipe: Annotated[str, typer.Argument(metavar="RECIPE", help="path to the recipe YAML")],
    out: Annotated[str | None, typer.Option("--out", help="output root (overrides output.root)")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", metavar="KEY=VALUE", help="override a recipe field, e.g. select.budget=500 (repeatable)"),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="publish even when nothing changed since the latest "
                                        "version")] = False,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="fail at once when another build of the dataset is "
                                          "running (default: wait for it)")] = False,
    prefect: Annotated[bool | None, typer.Option(
        "--prefect/--no-prefect", show_default=False,
        help="run as a Prefect flow run, with its tasks, logs and summary artifact in the Prefect UI (default: "
             "when PREFECT_API_URL names a server or the recipe reads ${prefect:...} secrets; --prefect without "
             "a server starts a temporary one for this build)")] = None,
) -> int:
    from curation.exceptions import RecipeError
    from curation.recipe import load_recipe

    overrides = list(set_ or [])
    if out:
        overrides.append(f"output.root={out}")
    recipe = load_recipe(recipe, overrides)  # before importing Prefect: bad recipes fail in a blink
    # ${prefect:name} secrets are read from Prefect's server, which starts under the lock
    prefect_secrets = "${prefect:" in recipe.canonical_json()
    if prefect is False and prefect_secrets:
        raise RecipeError("the recipe reads ${prefect:...} secrets, which live on Prefect's server; "
                          "drop --no-prefect (or take the value from an environment variable, ${NAME})")
    if prefect is None:
        prefect = prefect_secrets or bool(os.environ.get("PREFECT_API_URL"))

    from curation.builder import preflight

    reap_orphans()  # Ray or a Prefect server a SIGKILLed build could not stop
    mark_build()
    if not prefect_secrets:
        preflight(recipe)  # before waiting for the lock: a missing file fails at once
    if prefect:
        version = _build_in_flow(recipe, force=force, wait=not no_wait, prefect_secrets=prefect_secrets)
    else:
        version = _build_in_process(recipe, force=force, wait=not no_wait)
    if not version.published:
        print(f"unchanged since {version.name}: the recipe and every input equal that version's; "
              "nothing published (--force publishes anyway)")
    else:  # plain print, not rich: scripts and tests parse this, and the last line must be the path
        from curation.report import format_summary

        print(format_summary(version.manifest))
    print(version.path)
    return 0


def _build_in_process(recipe, *, force: bool, wait: bool):
    """The build without Prefect: the library's :meth:`~curation.builder.Builder.run` with Ray
    placement, its stage logs on stderr. Prefect adds about 2 s to every build (its import and
    the flow engine), 5 s with a temporary server; without a server to record the run, that buys
    nothing a one-off build needs."""
    from flows.ray_runtime import ray_builder

    with console_logs():
        return ray_builder(recipe, force=force, wait=wait).run()


def _build_in_flow(recipe, *, force: bool, wait: bool, prefect_secrets: bool):
    """The build as the ``curate`` Prefect flow run (:mod:`flows.curate`), on ``PREFECT_API_URL``
    or on a temporary server started for it (:func:`flows.prefect_server.prefect_api`).
    ``prefect_secrets``: the recipe reads Prefect Secret blocks, so its inputs are checked
    (:func:`~curation.builder.preflight`) only once the server is up."""
    from curation.builder import Builder, Version, preflight
    from curation.report import load_manifest
    from flows.prefect_server import prefect_api

    builder = Builder(recipe, force=force, wait=wait)

    def import_flow() -> None:  # while Prefect's temporary server boots
        import flows.curate  # noqa: F401  (also registers the ${prefect:...} resolver)

    # the lock before Prefect starts: a second build waits here, not in a race with a second
    # temporary Prefect server over the same database; the flow takes the same lock again
    with builder.lock(), contextlib.ExitStack() as stack:
        if prefect_secrets:
            stack.enter_context(prefect_api(while_starting=import_flow))
            preflight(recipe)
        unchanged = builder.unchanged_since()
        if unchanged is not None:  # Prefect (and Ray) never start for it
            return unchanged
        if not prefect_secrets:
            stack.enter_context(prefect_api(while_starting=import_flow))
        from prefect import tags

        from flows.curate import curate

        hide_tracebacks_of_user_errors()
        with tags(recipe.name, recipe.select.method):  # the UI filters runs by dataset and method
            version_dir = Path(curate(recipe.model_dump(mode="json"), force=force, wait=wait))
    return Version(version_dir, load_manifest(version_dir.parent, version_dir.name))


@contextlib.contextmanager
def console_logs():
    """The library's INFO records (stage starts and ends, progress lines) on stderr, in the
    layout Prefect's console handler uses, secrets redacted; undone when the block ends."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s.%(msecs)03d | %(levelname)-7s | %(name)s - %(message)s",
                                           datefmt="%H:%M:%S"))
    handler.addFilter(_UserErrorFilter())
    lib = logging.getLogger("curation")
    level, propagate = lib.level, lib.propagate
    lib.addHandler(handler)
    lib.setLevel(logging.INFO)
    lib.propagate = False  # once, here, not again through a root handler someone configured
    try:
        yield
    finally:
        lib.removeHandler(handler)
        lib.setLevel(level)
        lib.propagate = propagate


class _UserErrorFilter(logging.Filter):
    """Log expected errors (bad recipe or data) as one line: the CLI prints the fix anyway."""

    def filter(self, record: logging.LogRecord) -> bool:
        from curation.exceptions import CurationError
        from curation.secrets import redact

        if record.exc_info and isinstance(record.exc_info[1], CurationError):
            record.exc_info, record.exc_text = None, None
        record.msg, record.args = redact(record.getMessage()), ()  # no secret reaches a log line
        return True


def hide_tracebacks_of_user_errors() -> None:
    """Prefect logs a failed task with its traceback; for a CurationError that is noise."""
    loggers = [logging.root] + [logging.getLogger(n) for n in ("prefect", "prefect.flow_runs", "prefect.task_runs")]
    for logger in loggers:
        for handler in logger.handlers:
            if not any(isinstance(f, _UserErrorFilter) for f in handler.filters):
                handler.addFilter(_UserErrorFilter())


@app.command("report", help="Summary of a version, or SQL over its report.", epilog=REPORT_EXAMPLES)
def _report(
    dataset_dir: Annotated[str, typer.Argument(metavar="DATASET_DIR", help="<output.root>/<name>")],
    version: Annotated[str | None, typer.Option("--version", help="vNNNN (default: LATEST)")] = None,
    sql: Annotated[str | None, typer.Option("--sql", help="polars SQL over the tables `report` and `selected`")] = None,
    fmt: Annotated[Format, typer.Option("--format", help="output format")] = Format.table,
    html: Annotated[
        str | None, typer.Option("--html", metavar="PATH", help="write an HTML report (tables and plots) to PATH")
    ] = None,
) -> int:
    from curation.report import format_summary, format_table, load_manifest, query

    fmt_name = fmt.value
    if sql:
        df = query(dataset_dir, sql, version)
        if fmt_name == "csv":
            sys.stdout.write(df.write_csv())
        elif fmt_name == "json":
            print(json.dumps(df.to_dicts(), default=str, indent=None))
        else:
            print(format_table(df))
        return 0
    if html:
        from curation.html_report import render_html

        Path(html).write_text(render_html(dataset_dir, version), encoding="utf-8")
        print(html)
        return 0
    manifest = load_manifest(dataset_dir, version)
    if fmt_name == "json":
        print(json.dumps(manifest["summary"], default=str))
    elif fmt_name == "csv":
        import polars as pl

        sys.stdout.write(pl.DataFrame(manifest["summary"]["groups"]).write_csv())
    else:
        print(format_summary(manifest, max_groups=10_000))
    return 0


DatasetDir = Annotated[str, typer.Argument(metavar="DATASET_DIR", help="<output.root>/<name>")]
VersionOpt = Annotated[str | None, typer.Option("--version", help="vNNNN (default: LATEST)")]
FormatOpt = Annotated[Format, typer.Option("--format", help="output format")]


def _emit(rows: list[dict], fmt: Format, *, payload=None) -> None:
    """Rows as an aligned table, CSV, or JSON (``payload`` instead of the rows, when given)."""
    import polars as pl

    from curation.report import format_table

    if fmt is Format.json:
        print(json.dumps(rows if payload is None else payload, default=str))
    elif fmt is Format.csv:
        sys.stdout.write(pl.DataFrame(rows, infer_schema_length=None).write_csv() if rows else "")
    else:
        print(format_table(rows))


@app.command("versions", help="Every version of a dataset: date, method, budget, counts, recipe hash, parent "
             "(* marks LATEST).")
def _versions(dataset_dir: DatasetDir, fmt: FormatOpt = Format.table) -> int:
    from curation.catalog import versions_table

    _emit(versions_table(dataset_dir), fmt)
    return 0


@app.command("diff", help="What changed between two versions: items added and removed by reason code, "
             "per-group and per-cluster counts, recipe and input changes.")
def _diff(dataset_dir: DatasetDir,
          a: Annotated[str, typer.Argument(metavar="VA", help="the older version, e.g. v0001")],
          b: Annotated[str, typer.Argument(metavar="VB", help="the newer version, e.g. v0002")],
          fmt: FormatOpt = Format.table) -> int:
    from curation.catalog import diff_versions, format_diff

    d = diff_versions(dataset_dir, a, b)
    if fmt is Format.table:
        print(format_diff(d))
    else:  # csv: one row per item that entered or left the selection; json: everything
        _emit(d["items"], fmt, payload=d)
    return 0


@app.command("explain", help="Why an item is in or out of a version, in words (or --format json).")
def _explain(dataset_dir: DatasetDir,
             item_id: Annotated[str, typer.Argument(metavar="ITEM_ID", help="the item's id (report column id)")],
             version: VersionOpt = None, fmt: FormatOpt = Format.table) -> int:
    from curation.catalog import explain_item, format_explanation

    e = explain_item(dataset_dir, item_id, version)
    print(json.dumps(e, default=str) if fmt is Format.json else format_explanation(e))
    return 0


@app.command("verify", help="Recompute every file's sha256 and row count against the manifest; exit 1 and one "
             "line per problem when a version is damaged.")
def _verify(dataset_dir: DatasetDir,
            version: Annotated[str | None, typer.Option("--version", help="vNNNN (default: every version)")] = None,
            ) -> int:
    from curation.catalog import verify_dataset

    names, problems = verify_dataset(dataset_dir, version)
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        return 1
    print(f"ok: {len(names)} version(s) of {dataset_dir} match their manifests ({', '.join(names)})")
    return 0


# options shared by `schedule` and `deploy`
DeploymentName = Annotated[str | None, typer.Option("--name", help="deployment name (default: the recipe's name)")]
TimeZone = Annotated[str, typer.Option("--timezone", help="time zone of the cron expression")]
OutRoot = Annotated[str | None, typer.Option("--out", help="output root (overrides output.root)")]
SetField = Annotated[list[str] | None, typer.Option("--set", metavar="KEY=VALUE",
                                                    help="override a recipe field (repeatable)")]


def checked_recipe(recipe: str, out: str | None, set_: list[str] | None):
    """The validated recipe with ``--set`` and ``--out`` applied, its inputs and model checked."""
    from curation.builder import preflight
    from curation.recipe import load_recipe

    r = load_recipe(recipe, list(set_ or []) + ([f"output.root={out}"] if out else []))
    import flows.curate  # noqa: F401  (registers the ${prefect:...} resolver the check may need)

    preflight(r)
    return r


@app.command("schedule", help="Serve the build as a Prefect deployment that runs on a cron schedule "
             "(until Ctrl-C).", epilog=SCHEDULE_EXAMPLES)
def _schedule(
    recipe: Annotated[str, typer.Argument(metavar="RECIPE", help="path to the recipe YAML")],
    cron: Annotated[str, typer.Option("--cron", help="cron expression, e.g. \"0 3 * * *\" (03:00 every day)")],
    name: DeploymentName = None,
    timezone: TimeZone = "UTC",
    out: OutRoot = None,
    set_: SetField = None,
) -> int:
    r = checked_recipe(recipe, out, set_)  # a bad recipe fails now, not at 03:00
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.deployments.runner import EntrypointType

    from flows.curate import curate

    hide_tracebacks_of_user_errors()
    deployment = name or r.name
    print(f"serving deployment curate/{deployment} on {cron!r} ({timezone}); each run builds {r.name} "
          "(nothing published when nothing changed). Ctrl-C stops.", flush=True)
    # the resolved recipe is the parameter, so a run does not depend on the YAML file staying put;
    # the flow is found by module path (an installed package), whatever the working directory
    with runner_scratch():
        curate.serve(name=deployment, schedules=[CronSchedule(cron=cron, timezone=timezone)],
                     parameters={"recipe": r.model_dump(mode="json")}, tags=[r.name, r.select.method],
                     description=f"curate build {recipe}", print_starting_message=False,
                     entrypoint_type=EntrypointType.MODULE_PATH)
    return 0


@contextlib.contextmanager
def runner_scratch():
    """Give Prefect's ``Runner`` a scratch directory of ours, removed when serving stops.

    The runner makes ``<temp dir>/runner_storage/<uuid>`` when it starts and removes it only when
    its own context exits cleanly, which Ctrl-C skips: every stopped ``curate schedule`` left an
    empty directory in the system's temp dir. The runner reads ``tempfile.gettempdir()`` when it
    is made (inside ``serve``), so pointing that at a directory of ours for the call is enough.
    """
    import shutil
    import tempfile

    scratch, saved = tempfile.mkdtemp(prefix="curate-schedule-"), tempfile.tempdir
    tempfile.tempdir = scratch
    try:
        yield
    finally:
        tempfile.tempdir = saved
        shutil.rmtree(scratch, ignore_errors=True)


DEPLOY_EXAMPLES = """Examples:

  prefect work-pool create curation --type process

  curate deploy examples/quickstart.yaml --pool curation --cron "0 3 * * *"

  prefect worker start --pool curation
"""


@app.command("deploy", help="Register the build as a Prefect deployment for a work pool (a worker runs it).",
             epilog=DEPLOY_EXAMPLES)
def _deploy(
    recipe: Annotated[str, typer.Argument(metavar="RECIPE", help="path to the recipe YAML")],
    pool: Annotated[str, typer.Option("--pool", help="the Prefect work pool whose workers run the build")],
    cron: Annotated[str | None, typer.Option("--cron", help="cron schedule (default: runs only when triggered)")] = None,
    name: DeploymentName = None,
    timezone: TimeZone = "UTC",
    out: OutRoot = None,
    set_: SetField = None,
) -> int:
    r = checked_recipe(recipe, out, set_)
    if not os.environ.get("PREFECT_API_URL"):
        from curation.exceptions import CurationError

        raise CurationError("a deployment lives on a Prefect server: set PREFECT_API_URL "
                            "(e.g. http://127.0.0.1:4200/api after `prefect server start`)")
    from prefect.client.schemas.schedules import CronSchedule

    import flows

    hide_tracebacks_of_user_errors()
    # the worker runs the flow from this installation's source; relative recipe paths resolve in
    # the worker's working directory, so the recipe's own paths are best absolute for a pool
    source = Path(flows.__file__).resolve().parents[1]
    flow = curate_from_source(source)
    deployment = name or r.name
    flow.deploy(name=deployment, work_pool_name=pool, build=False, push=False,
                schedules=[CronSchedule(cron=cron, timezone=timezone)] if cron else None,
                parameters={"recipe": r.model_dump(mode="json")}, tags=[r.name, r.select.method],
                description=f"curate build {recipe}", print_next_steps=False, ignore_warnings=True)
    print(f"deployed curate/{deployment} to work pool {pool!r}" + (f" on {cron!r} ({timezone})" if cron else "")
          + f"; start a worker: prefect worker start --pool {pool}")
    return 0


def curate_from_source(source: Path):
    """The curate flow loaded from a source directory (what a process worker runs)."""
    from prefect import Flow

    return Flow.from_source(source=str(source), entrypoint="flows/curate.py:curate")


def recipe_schema_json() -> str:
    """The recipe's JSON Schema (:func:`curation.recipe.recipe_json_schema`) as indented JSON."""
    from curation.recipe import recipe_json_schema

    return json.dumps(recipe_json_schema(), indent=2)


@app.command("schema", help="Print the recipe's JSON Schema (for editors and validators).", epilog=SCHEMA_EXAMPLES)
def _schema() -> int:
    text = recipe_schema_json()
    if sys.stdout.isatty():  # colour helps a person reading it; a pipe or file gets plain JSON
        from rich.console import Console

        Console().print_json(text, indent=2)
    else:
        print(text)
    return 0


_interrupt_requested = threading.Event()  # Ctrl-C or SIGTERM arrived
_interrupt_handled = threading.Event()  # main() caught it and is cleaning up


def _interrupt(signum: int, frame: object) -> None:
    """SIGINT and SIGTERM: raise KeyboardInterrupt, and keep raising it every few seconds until
    main() has caught it. One raised while Python runs a ``__del__`` (an asyncio transport being
    collected, say) is printed and dropped, and the build would carry on to the end."""
    if not _interrupt_requested.is_set():
        _interrupt_requested.set()
        threading.Thread(target=_repeat_interrupt, name="curation-interrupt", daemon=True).start()
    raise KeyboardInterrupt


def _repeat_interrupt(period: float = 2.0) -> None:
    import signal

    # a real signal, not _thread.interrupt_main(): it also wakes a main thread blocked in C (ray.get)
    while not _interrupt_handled.wait(period):  # long enough for Prefect to record the crash
        os.kill(os.getpid(), signal.SIGINT)


def _quiet_unraisable(args) -> None:
    """An interrupt dropped in a ``__del__`` is delivered again, without an 'Exception ignored'
    traceback: a KeyboardInterrupt by :func:`_repeat_interrupt`, and Prefect's TerminationSignal
    (its SIGTERM handler during a flow run) by sending SIGTERM once more."""
    import signal

    if isinstance(args.exc_value, KeyboardInterrupt):
        return
    if type(args.exc_value).__name__ == "TerminationSignal":
        threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()
        return
    sys.__unraisablehook__(args)


BUILD_ID_VAR = "CURATION_BUILD_ID"  # "<pid>-<random>", inherited by every process a build starts


def mark_build() -> None:
    """Mark this build's process tree: Ray and Prefect's server inherit the variable, so if this
    process is SIGKILLed (no clean-up can run) the next build can find and stop what it left."""
    import uuid

    os.environ[BUILD_ID_VAR] = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"


def reap_orphans(grace: float = 3.0) -> int:
    """Stop processes left by builds that were killed: those whose ``CURATION_BUILD_ID`` names a
    process that no longer exists. Returns how many were stopped (Linux /proc; 0 elsewhere)."""
    import signal
    import time

    me = os.getpid()
    orphans = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        mark = next((v[len(BUILD_ID_VAR) + 1:] for v in env if v.startswith(BUILD_ID_VAR.encode() + b"=")), None)
        if not mark or int(entry.name) == me:
            continue
        owner = int(mark.split(b"-")[0])
        if owner != me and not Path(f"/proc/{owner}").exists():
            orphans.append(int(entry.name))
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in orphans:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in orphans):
            time.sleep(0.1)
    if orphans:
        print(f"stopped {len(orphans)} process(es) left running by a killed build", file=sys.stderr, flush=True)
    return len(orphans)


def _descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (from /proc; empty where there is none)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def stop_children(grace: float = 3.0) -> None:
    """Stop everything this process started: its local Ray (``ray.shutdown``), Prefect's
    temporary API server, and then any descendant still alive after ``grace`` seconds (Ray's
    agents outlive the raylet by minutes otherwise). Used when a build is interrupted."""
    import signal
    import time

    started = _descendants(os.getpid())
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    from flows.prefect_server import stop_all

    stop_all()  # the temporary Prefect server
    deadline = time.monotonic() + grace
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = [p for p in started if Path(f"/proc/{p}").exists()]
        while alive and time.monotonic() < deadline:
            time.sleep(0.1)
            alive = [p for p in alive if Path(f"/proc/{p}").exists()]
        for p in alive:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 1.0


def main(argv: Sequence[str] | None = None) -> int:
    """The entry point (console script and tests): returns the exit code, never calls sys.exit."""
    for key, value in QUIET_DEFAULTS.items():
        os.environ.setdefault(key, value)
    import signal

    from curation.exceptions import CurationError

    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["build"]:  # `schedule` serves until Ctrl-C, which Prefect's runner handles itself
        for sig in (signal.SIGINT, signal.SIGTERM):  # not when inherited ignored (nohup, background jobs)
            if signal.getsignal(sig) in (signal.SIG_DFL, signal.default_int_handler):
                signal.signal(sig, _interrupt)
        sys.unraisablehook = _quiet_unraisable
    command = typer.main.get_command(app)
    try:
        # standalone_mode=False: click raises instead of printing a framed panel and exiting, and
        # returns the command's value; --help and --version come back as their exit code (0)
        rv = command.main(args=args, prog_name="curate", standalone_mode=False)
    except typer.TyperException as exc:
        # typer's (vendored click) usage errors: unknown command or option, bad --format, missing
        # argument. exit_code is 2 for those; point at the help of the command that was misused.
        ctx = getattr(exc, "ctx", None)
        where = ctx.command_path if ctx is not None else "curate"
        msg = exc.format_message().replace("Value error, ", "")  # pydantic's prefix on a bad choice
        print(f"error: {msg} (see `{where} --help`)", file=sys.stderr)
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        return _interrupted(console=argv is None)
    except SystemExit as exc:  # Prefect turns a SIGTERM during a flow run into exit(15)
        if exc.code in (signal.SIGTERM, -signal.SIGTERM, 128 + signal.SIGTERM):
            return _interrupted(console=argv is None)
        raise
    except (CurationError, FileNotFoundError, KeyError) as exc:
        from curation.secrets import redact

        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"error: {redact(str(msg))}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # polars SQL errors and the like: one line, not a traceback
        if type(exc).__module__.startswith("polars"):
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        raise
    if rv == EXIT_INTERRUPTED:  # typer turns KeyboardInterrupt (Ctrl-C; SIGTERM via _interrupt) into 130
        return _interrupted(console=argv is None)
    return rv if isinstance(rv, int) else 0


def _interrupted(*, console: bool) -> int:
    """Ctrl-C or SIGTERM: stop the children, say so in one line (nothing is half-published, the
    finished stages stay for the rerun). The console script then leaves at once: Prefect's
    atexit hooks would only wait on work that was cancelled."""
    _interrupt_handled.set()
    if console:  # in tests main() shares its process (and Ray) with the test session
        stop_children()
    print("interrupted: nothing was published; finished stages are kept, so a rerun resumes",
          file=sys.stderr, flush=True)
    if console:
        sys.stdout.flush()
        os._exit(EXIT_INTERRUPTED)
    return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
