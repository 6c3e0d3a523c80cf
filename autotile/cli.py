"""The `autotile` command line: tune workloads, inspect the database, show the device key.

Progress and tables go to stderr; stdout carries only the result (with --json, one JSON object).
"""

from __future__ import annotations

import json
import sys

import click

import autotile
from autotile.cli_tools import user_errors
from autotile.errors import AutotileError


@click.group()
@click.version_option(autotile.__version__)
def main():
    """autotile: tune tensor kernels for this machine and keep the results in a shared database."""


@main.group()
def tune():
    """Tune one workload on this machine."""


def _add_family_commands():
    """Each family's `autotile tune <op>` commands, from its package (autotile/ops/<op>/cli.py)."""
    from autotile.dotted import resolve
    from autotile.ops import families

    for fam in families().values():
        if fam.cli:
            for command in resolve(fam.cli)():
                tune.add_command(command)


_add_family_commands()


def _add_model_commands():
    from autotile.cli_model import report_command, tune_model_command

    main.add_command(tune_model_command)
    main.add_command(report_command)


_add_model_commands()


@main.group("db")
def db_group():
    """Inspect the tuning database."""


def _add_db_commands():
    """export, import, merge, verify: sharing tuned configs (autotile/cli_db.py)."""
    from autotile.cli_db import COMMANDS

    for command in COMMANDS:
        db_group.add_command(command)


_add_db_commands()


@db_group.command("list")
@click.option("--db", "db_path", type=click.Path(dir_okay=False), default=None)
@click.option("--json", "as_json", is_flag=True)
@user_errors
def db_list(db_path, as_json):
    """Tuned workloads: one row per device, workload and backend."""
    from autotile.api import open_db

    with open_db(db_path) as db:
        rows = db.list_workloads()
    if as_json:
        click.echo(json.dumps(rows, sort_keys=True))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("workload", "device", "backend", "measured", "failed", "best us", "GFLOP/s", "trust", "origin")
    for r in rows:
        table.add_row(r["workload"], r["device"], r["backend"], str(r["measurements"]), str(r["failures"]),
                      f"{r['best_latency_us']:.1f}" if r.get("best_latency_us") else "-",
                      f"{r['best_gflops']:.1f}" if r.get("best_gflops") else "-",
                      ", ".join(f"{n} {level}" for level, n in sorted(r["trust"].items())), ", ".join(r["origins"]))
    Console(width=200).print(table)


@db_group.command("show")
@click.argument("key", required=False)
@click.option("--db", "db_path", type=click.Path(dir_okay=False), default=None)
@click.option("--json", "as_json", is_flag=True)
@click.option("--limit", type=int, default=20, show_default=True, help="Measurements to list, fastest first.")
@click.option("--model", "model_run", type=int, default=None, help="A model run's tasks instead (see --models).")
@click.option("--models", "all_models", is_flag=True, help="The model runs instead (autotile tune-model).")
@user_errors
def db_show(key, db_path, as_json, limit, model_run, all_models):
    """Measurements of one workload (KEY: its key as `db list` prints it, or a unique prefix), or model runs."""
    from autotile.api import open_db

    if model_run is not None or all_models:
        from autotile.cli_model import show_model_runs

        return show_model_runs(db_path, model_run, as_json)
    if key is None:
        raise AutotileError("give a workload KEY, --model RUN or --models")
    with open_db(db_path) as db:
        full = db.resolve_workload(key)
        records = db.measurements(workload=full)
    records.sort(key=lambda r: (r["status"] != "ok", r["latency_us"] or 0))
    if as_json:
        click.echo(json.dumps({"workload": full, "measurements": records}, sort_keys=True, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("device", "status", "us", "GFLOP/s", "threads", "trust", "config / error", title=full)
    for r in records[:limit]:
        detail = r["error"] or " ".join(f"{k}={v}" for k, v in r["config"].items())
        status = f"failed: {r['failure']}" if r["failure"] else r["status"]
        trust = r["trust"] if r["origin"] == "local" else f"{r['trust']} ({r['origin']})"
        table.add_row(r["device"], status, f"{r['latency_us']:.1f}" if r["latency_us"] else "-",
                      f"{r['gflops']:.1f}" if r["gflops"] else "-", str(r["threads"]), trust, detail)
    failed = sum(r["status"] != "ok" for r in records)
    Console(width=200).print(table)
    click.echo(f"{len(records)} measurements, {failed} failed")


@db_group.command("model-quality")
@click.argument("key")
@click.option("--db", "db_path", type=click.Path(dir_okay=False), default=None)
@click.option("--folds", type=click.IntRange(min=2), default=4, show_default=True)
@click.option("-k", "top_k", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@user_errors
def db_model_quality(key, db_path, folds, top_k, as_json):
    """How well the cost model ranks a workload's measured configs it has not seen (cross-validated)."""
    from autotile.api import open_db
    from autotile.costmodel import cross_validate
    from autotile.ops import space_for, workload_from_dict

    with open_db(db_path) as db:
        full = db.resolve_workload(key)
        workload = workload_from_dict(db.workloads()[full])
        space = space_for(workload)
        records = db.measurements(workload=full, template=space.template)
    if len(records) < 2 * folds:
        raise AutotileError(f"{full} has {len(records)} measurements; {2 * folds} are needed for {folds} folds")
    X = [space.features(space.config_type.from_dict(r["config"])) for r in records]
    latency = [r["latency_us"] if r["status"] == "ok" else float("inf") for r in records]
    report = {"workload": full, "measurements": len(records), **cross_validate(X, latency, folds=folds, k=top_k)}
    if as_json:
        click.echo(json.dumps(report, sort_keys=True))
    else:
        click.echo(f"{full}: {len(records)} measurements, {folds}-fold cross-validation: "
                   f"Spearman {report['spearman']:.3f}, top-{top_k} recall {report['recall_at_k']:.2f}")


@main.command()
@click.option("--json", "as_json", is_flag=True)
def device(as_json):
    """This machine's device key and full fingerprint."""
    from autotile.codegen.tvm import amx_permission
    from autotile.db.device import current_device

    dev = current_device("tvm")
    amx = amx_permission.status()
    amx_line = {"usable": amx.usable, "reason": amx.reason}
    if as_json:
        click.echo(json.dumps({"key": dev.key, "fingerprint": dev.fingerprint, "amx": amx_line}, sort_keys=True))
    else:
        click.echo(dev.key)
        click.echo(json.dumps(dev.fingerprint, indent=2, sort_keys=True))
        click.echo(amx_permission.describe())


if __name__ == "__main__":
    sys.exit(main())
