"""`autotile tune-model` (a whole model under one budget) and `autotile report` (its curves and task table)."""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from pathlib import Path

import click

from autotile.cli_tools import parse_shape, stderr_console, user_errors
from autotile.errors import AutotileError

INPUT_DTYPES = ("float32", "bfloat16", "float16", "int64", "int32")


def load_factory(spec: str):
    """'package.module:factory' or 'path/to/file.py:factory' -> the factory (a callable)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise AutotileError(f"model {spec!r} must be MODULE:FACTORY (a module or .py file, and a function in it)")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise AutotileError(f"model file {module_name!r} does not exist")
            loader = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(loader)
            loader.loader.exec_module(module)
        else:
            sys.path.insert(0, str(Path.cwd()))  # as `python -m` would find it
            module = importlib.import_module(module_name)
    except AutotileError:
        raise
    except Exception as e:
        raise AutotileError(f"cannot import {module_name!r}: {type(e).__name__}: {e}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise AutotileError(f"{module_name!r} has no function {attr!r}")
    return factory


def model_and_inputs(factory, shapes, dtypes):
    """The factory's (model, example inputs), the inputs made from --input-shape/--input-dtype unless it gave
    them."""
    import torch

    made = factory()
    model, inputs = made if isinstance(made, tuple) and len(made) == 2 else (made, None)
    if not isinstance(model, torch.nn.Module) and not callable(model):
        raise AutotileError(f"the factory returned {type(model).__name__}, not a model")
    if inputs is None:
        if not shapes:
            raise AutotileError("give --input-shape (once per input), or return (model, example_inputs)")
        if len(dtypes) not in (0, 1, len(shapes)):
            raise AutotileError(f"{len(dtypes)} --input-dtype for {len(shapes)} --input-shape")
        dtypes = list(dtypes) * len(shapes) if len(dtypes) == 1 else list(dtypes) or ["float32"] * len(shapes)
        generator = torch.Generator().manual_seed(0)
        inputs = tuple(_example(parse_shape(s, [f"d{i}" for i in range(len(s.split("x")))]), d, generator)
                       for s, d in zip(shapes, dtypes))
    if isinstance(model, torch.nn.Module):
        model.eval()
    return model, tuple(inputs) if isinstance(inputs, (list, tuple)) else (inputs,)


def _example(shape, dtype: str, generator):
    import torch

    if dtype.startswith("int"):  # token ids: small, valid for any embedding
        return torch.randint(0, 2, shape, generator=generator, dtype=getattr(torch, dtype))
    return torch.randn(shape, generator=generator).to(getattr(torch, dtype))


@click.command("tune-model")
@click.argument("model_spec", metavar="MODULE:FACTORY")
@click.option("--input-shape", "shapes", multiple=True, help="An example input's shape, e.g. 1x128x768 (repeat).")
@click.option("--input-dtype", "dtypes", multiple=True, type=click.Choice(INPUT_DTYPES),
              help="Each input's dtype (one for all, or one per input; default float32).")
@click.option("--trials", type=click.IntRange(min=1), default=None,
              help="Global budget of trials (default 32 per task).")
@click.option("--time-budget", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Stop after this many seconds.")
@click.option("--max-trials-per-task", type=click.IntRange(min=1), default=None)
@click.option("--scheduler", type=click.Choice(["gradient", "round-robin", "equal"]), default="gradient",
              show_default=True)
@click.option("--backend", type=click.Choice(["auto", "tvm", "triton"]), default="auto", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--db", "db_path", type=click.Path(dir_okay=False), default=None)
@click.option("--resume", is_flag=True, help="Continue a run of this model that stopped (killed, interrupted).")
@click.option("--retune", is_flag=True, help="Start a new run even if one finished.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@user_errors
def tune_model_command(model_spec, shapes, dtypes, trials, time_budget, max_trials_per_task, scheduler, backend,
                       seed, db_path, resume, retune, as_json):
    """Tune every op autotile replaces in a model, weighted by its calls per forward, under one budget.

    FACTORY returns a model, or a (model, example inputs) pair."""
    from autotile.modeltune import tune_model

    model, inputs = model_and_inputs(load_factory(model_spec), shapes, dtypes)
    result = tune_model(model, inputs, db=db_path, backend=backend, name=model_spec, trials=trials,
                        time_budget=time_budget, max_trials_per_task=max_trials_per_task, scheduler=scheduler,
                        seed=seed, resume=resume, retune=retune, progress=not as_json)
    if as_json:
        click.echo(json.dumps(result.to_json_dict(), sort_keys=True))
        return
    if result.cached:
        stderr_console().print(f"model run {result.run} of this model is done (--retune runs it again)")
    estimate = "-" if result.estimated_us is None else f"{result.estimated_us:.1f} us"
    click.echo(f"model run {result.run}: {len(result.tasks)} tasks, {result.trials} trials, "
               f"{result.seconds:.0f} s; estimated forward in tuned ops {estimate}")


@click.command("report")
@click.option("--db", "db_path", type=click.Path(dir_okay=False), default=None)
@click.option("--model", "run_id", type=int, default=None, help="The model run (default: the latest).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="autotile-report", show_default=True)
@user_errors
def report_command(db_path, run_id, out_dir):
    """A model run's tuning curves and task table: report.html, curves.json and PNG plots (with matplotlib)."""
    from autotile.api import open_db
    from autotile.modeltune.report import write_report

    with open_db(db_path) as db:
        files = write_report(db, run_id, Path(out_dir))
    for path in files.values():
        click.echo(str(path))


def show_model_runs(db_path, run_id: int | None, as_json: bool):
    """`db show --models`: every model run; `db show --model N`: one run's task table."""
    from rich.console import Console
    from rich.table import Table

    from autotile.api import open_db
    from autotile.db import model_runs
    from autotile.modeltune.report import fmt, report_data

    with open_db(db_path) as db:
        data = report_data(db, run_id) if run_id is not None else model_runs.all_runs(db)
    if as_json:
        click.echo(json.dumps(data, sort_keys=True, default=str))
        return
    if run_id is None:
        table = Table("run", "model", "scheduler", "status", "trials", "budget", "device", "updated")
        for r in data:
            budget = r["budget"]
            table.add_row(str(r["id"]), str(r["name"]), r["scheduler"], r["status"], str(r["trials"]),
                          f"{budget.get('trials') or '-'} trials / {budget.get('seconds') or '-'} s", r["device"],
                          r["updated"])
    else:
        table = Table("workload", "calls", "trials", "default us", "best us", "speedup", "retired",
                      title=f"model run {run_id}: {data['run']['name']} ({data['run']['status']})")
        for t in data["tasks"]:
            table.add_row(t["workload"], str(t["calls"]), str(t["trials"]), fmt(t["default_latency_us"]),
                          fmt(t["best_latency_us"]), fmt(t["speedup"], ".2f"), t["retired"] or "")
    Console(width=200).print(table)
