"""What every `autotile tune <op>` command shares: shape parsing, the tuning options, user-error handling,
and the run-and-report step. Each family's command (autotile/ops/<op>/cli.py) is built from these."""

from __future__ import annotations

import functools
import json

import click

import autotile
from autotile.errors import AutotileError, KernelDefect


def parse_shape(text: str, names) -> tuple[int, ...]:
    """'512x768x768' -> (512, 768, 768), with an error naming the expected form (names: dim letters)."""
    parts = text.lower().replace("*", "x").split("x")
    form = "x".join(names)
    if len(parts) != len(names):
        raise AutotileError(f"shape {text!r} must have the form {form} ({len(names)} integers joined by 'x')")
    dims = []
    for name, part in zip(names, parts):
        if not part.strip().isdigit() or int(part) <= 0:
            raise AutotileError(f"shape {text!r}: {name} must be a positive integer, got {part!r}")
        dims.append(int(part))
    return tuple(dims)


def user_errors(fn):
    """AutotileError (a bad value) -> a one-line 'Error: ...' and exit code 2; a kernel that cannot be built
    -> its one-line reason and exit code 1; never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except AutotileError as e:
            raise click.UsageError(str(e)) from None
        except KernelDefect as e:
            raise click.ClickException(str(e)) from None

    return wrapper


def stderr_console():
    from rich.console import Console

    return Console(stderr=True)


def common_tune_options(fn):
    options = [
        click.option("--backend", type=click.Choice(["auto", "tvm", "triton"]), default="auto", show_default=True),
        click.option("--trials", type=click.IntRange(min=1), default=64, show_default=True,
                     help="Candidates to build and measure (failures count)."),
        click.option("--time-budget", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="Stop tuning after this many seconds."),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--strategy", type=click.Choice(["evolution", "random"]), default="evolution",
                     show_default=True),
        click.option("--db", "db_path", type=click.Path(dir_okay=False), default=None,
                     help="SQLite database (default $AUTOTILE_DB, else the user cache dir)."),
        click.option("--retune", is_flag=True, help="Run new trials even if the workload is tuned."),
        click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def run_and_report(workload, backend, trials, time_budget, seed, strategy, db_path, retune, as_json):
    result = autotile.tune(workload, trials=trials, db=db_path, time_budget=time_budget, seed=seed,
                           strategy=strategy, backend=backend, retune=retune, progress=not as_json)
    print_summary(result)
    if as_json:
        click.echo(json.dumps(result.to_json_dict(), sort_keys=True))
    elif result.verified:
        click.echo(f"{result.workload}: {result.latency_us:.1f} us, {result.gflops:.1f} GFLOP/s"
                   f"{' (cached)' if result.cached else ''}")
    if not result.verified:
        raise click.ClickException(f"no candidate for {result.workload} passed verification in {result.trials} "
                                   f"trials; see `autotile db show {result.workload}`")


def print_summary(result):
    from rich.table import Table

    table = Table(title="autotile", show_header=False)
    for name, value in [
        ("workload", result.workload), ("device", result.device), ("backend", result.backend),
        ("config", " ".join(f"{k}={v}" for k, v in result.config.items())),
        ("latency", f"{result.latency_us:.1f} us" if result.latency_us else "-"),
        ("GFLOP/s", f"{result.gflops:.1f}" if result.gflops else "-"),
        ("trials", f"{result.trials} ({result.failed} failed)" if not result.cached else str(result.trials)),
        ("tuning seconds", f"{result.tuning_seconds:.1f}"), ("threads", str(result.threads)),
        ("verified", str(result.verified)), ("cached", str(result.cached)),
    ]:
        table.add_row(name, value)
    stderr_console().print(table)


def parse_pair(text: str, name: str) -> tuple[int, int]:
    """'2' or '2x1' -> (2, 2) or (2, 1)."""
    parts = text.lower().split("x")
    if len(parts) not in (1, 2) or not all(p.strip().isdigit() for p in parts):
        raise AutotileError(f"{name} {text!r} must be N or HxW (non-negative integers)")
    values = [int(p) for p in parts]
    return (values[0], values[-1])
