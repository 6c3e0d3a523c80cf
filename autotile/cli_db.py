"""`autotile db export | import | merge | verify`: sharing tuned configs between machines (autotile/db/bundle.py,
importer.py, verify.py). Summaries go to stderr, --json results to stdout; a bundle goes to -o or to stdout."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from autotile.cli_tools import stderr_console, user_errors
from autotile.errors import AutotileError

DB_OPTION = click.option("--db", "db_path", type=click.Path(dir_okay=False), default=None,
                         help="SQLite database (default $AUTOTILE_DB, else the user cache dir).")


@click.command("export")
@DB_OPTION
@click.option("--device", "device_key", default=None, help="Only this device key's records.")
@click.option("--workload", "prefix", default=None, help="Only workloads whose key starts with this.")
@click.option("--format", "fmt", type=click.Choice(["bundle", "t4"]), default="bundle", show_default=True,
              help="bundle: autotile's JSON Lines; t4: Kernel Tuner's T4 results (export only).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="File to write (a name ending in .gz is gzip-compressed); default stdout.")
@user_errors
def export_command(db_path, device_key, prefix, fmt, output):
    """Write the database's records (ok and failed, every trust) as a bundle another machine can import."""
    from autotile.api import open_db
    from autotile.db import bundle
    from autotile.db.store import SCHEMA_VERSION
    from autotile.db.t4 import t4_bytes

    with open_db(db_path) as db:
        selection = bundle.select(db, device_key, prefix)
    data = bundle.bundle_bytes(selection, SCHEMA_VERSION) if fmt == "bundle" else t4_bytes(selection)
    if output is not None and output.endswith(".gz"):
        data = bundle.compress(data)
    if output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        try:
            Path(output).write_bytes(data)
        except OSError as e:
            raise AutotileError(f"cannot write {output}: {e.strerror or e}") from None
    skipped = f"; {selection.skipped} unreadable record(s) left out" if selection.skipped else ""
    stderr_console().print(f"exported {len(selection.measurements)} measurement(s) of {len(selection.workloads)} "
                           f"workload(s) on {len(selection.devices)} device(s){skipped}")


@click.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@DB_OPTION
@click.option("--json", "as_json", is_flag=True)
@user_errors
def import_command(files, db_path, as_json):
    """Import bundles (FILES) as foreign records: checked line by line first, then written in one transaction."""
    from autotile.api import open_db
    from autotile.db.importer import import_bundles

    with open_db(db_path) as db:
        summary = import_bundles(db, files)
    _report(summary, as_json, "imported")


@click.command("merge")
@click.argument("sources", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="The new database.")
@click.option("--json", "as_json", is_flag=True)
@user_errors
def merge_command(sources, output, as_json):
    """A new database with every record of SOURCES (databases), each with the origin and trust it has there."""
    from autotile.db.importer import merge_databases

    _report(merge_databases(sources, output), as_json, "merged")


def _report(summary, as_json: bool, verb: str):
    if as_json:
        click.echo(json.dumps(summary.to_json_dict(), sort_keys=True))
    stderr_console().print(
        f"{verb} {summary.bundles} source(s): {summary.inserted} new record(s), {summary.replaced} replaced, "
        f"{summary.unchanged} already there, {summary.kept_local} kept as measured here; {summary.devices} new "
        f"device(s), {summary.workloads} new workload(s)")


@click.command("verify")
@DB_OPTION
@click.option("--top-k", type=click.IntRange(min=1), default=3, show_default=True,
              help="Foreign records rebuilt and timed per workload, fastest first.")
@click.option("--workload", "prefix", default=None, help="Only workloads whose key starts with this.")
@click.option("--backend", type=click.Choice(["auto", "tvm", "triton"]), default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True)
@user_errors
def verify_command(db_path, top_k, prefix, backend, as_json):
    """Rebuild, re-verify and re-time here the fastest foreign records of this device: they become `verified`,
    with the local latency, and are then served like records tuned here."""
    from rich.console import Console

    from autotile.db.verify import verify_foreign
    from autotile.session import default_session

    console = Console(stderr=True, width=200)
    with default_session(backend, db_path) as session:
        rows = verify_foreign(session, top_k, prefix, progress=None if as_json else console.print)
    if as_json:
        click.echo(json.dumps([r.to_json_dict() for r in rows], sort_keys=True))
        return
    from rich.table import Table

    table = Table("workload", "foreign", "built", "verified", "failed", "local us", "foreign us")
    for r in rows:
        table.add_row(r.workload, str(r.candidates), str(r.built), str(r.verified), str(r.failed),
                      f"{r.best_local_us:.1f}" if r.best_local_us else "-",
                      f"{r.its_foreign_us:.1f}" if r.its_foreign_us else "-")
    console.print(table)
    if not rows:
        console.print("no foreign records of this device to verify")


COMMANDS = (export_command, import_command, merge_command, verify_command)
