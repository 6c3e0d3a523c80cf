"""`autotile report`: a model run's tuning curves and task table as one HTML page, the curves' data as JSON, and
PNG plots where matplotlib is installed (the optional `report` extra)."""

from __future__ import annotations

import html
import json
from pathlib import Path

from autotile.db import model_runs
from autotile.errors import AutotileError


def report_data(db, run_id: int | None) -> dict:
    """The run (the latest when None), its tasks with their curves and speedup over the default, and the overall
    curve, as stored in the database."""
    runs = model_runs.all_runs(db)
    if not runs:
        raise AutotileError(f"{db.path} holds no model run; tune one with `autotile tune-model`")
    if run_id is None:
        run = runs[-1]
    else:
        run = next((r for r in runs if r["id"] == run_id), None)
        if run is None:
            raise AutotileError(f"no model run {run_id} in {db.path}; runs: {', '.join(str(r['id']) for r in runs)}")
    tasks = []
    for t in model_runs.tasks(db, run["id"]):
        best = next((lat for _, lat in reversed(t["curve"]) if lat is not None), None)
        default = t["default_latency_us"]
        tasks.append({"workload": t["workload"], "calls": t["calls"], "trials": t["trials"],
                      "default_latency_us": default, "best_latency_us": best, "retired": t["retired"],
                      "speedup": default / best if default and best else None, "curve": t["curve"]})
    return {"run": {k: run[k] for k in ("id", "name", "device", "backend", "scheduler", "status", "trials",
                                        "budget", "started", "updated")},
            "tasks": tasks, "overall": run["curve"]}


def write_report(db, run_id: int | None, out: Path) -> dict[str, Path]:
    """report.html, curves.json and (with matplotlib) tasks.png and overall.png under `out`."""
    data = report_data(db, run_id)
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": out / "curves.json", "html": out / "report.html"}
    files["json"].write_text(json.dumps(data, indent=1, sort_keys=True))
    files.update(_plots(data, out))
    files["html"].write_text(_html(data, {k: p.name for k, p in files.items() if p.suffix == ".png"}))
    return files


def _plots(data: dict, out: Path) -> dict[str, Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # the optional extra: the page keeps its tables and the JSON its data
        return {}
    files = {}
    fig, ax = plt.subplots(figsize=(8, 5))
    for t in data["tasks"]:
        points = [(n, lat) for n, lat in t["curve"] if lat is not None]
        if points:
            ax.plot(*zip(*points), marker=".", label=f"{t['workload'][:48]} x{t['calls']}")
    ax.set(xlabel="trials of the task", ylabel="best latency (us)", title="best latency per task", yscale="log")
    ax.legend(fontsize=6)
    files["tasks_png"] = out / "tasks.png"
    fig.savefig(files["tasks_png"], dpi=100, bbox_inches="tight")
    plt.close(fig)
    overall = [(n, us) for n, us, _ in data["overall"] if us is not None]
    if overall:
        fig, ax = plt.subplots(figsize=(8, 4))
        ax.plot(*zip(*overall), marker=".")
        ax.set(xlabel="total trials", ylabel="estimated forward in tuned ops (us)",
               title=f"model run {data['run']['id']} ({data['run']['scheduler']})")
        files["overall_png"] = out / "overall.png"
        fig.savefig(files["overall_png"], dpi=100, bbox_inches="tight")
        plt.close(fig)
    return files


def fmt(value, spec: str = ".1f") -> str:
    """A number for a table cell; "-" for none."""
    return "-" if value is None else format(value, spec)


def _html(data: dict, images: dict[str, str]) -> str:
    run, esc = data["run"], html.escape
    rows = "".join(
        f"<tr><td>{esc(t['workload'])}</td><td>{t['calls']}</td><td>{t['trials']}</td>"
        f"<td>{fmt(t['default_latency_us'])}</td><td>{fmt(t['best_latency_us'])}</td>"
        f"<td>{fmt(t['speedup'], '.2f')}</td><td>{esc(t['retired'] or '')}</td></tr>" for t in data["tasks"])
    plots = "".join(f'<p><img src="{esc(name)}" alt="{esc(key)}"></p>' for key, name in sorted(images.items()))
    if not plots:
        plots = "<p>No plots: install the report extra (matplotlib); the curves are in curves.json.</p>"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>autotile model run {run['id']}</title>
<style>body{{font-family:sans-serif}} td,th{{padding:2px 8px;text-align:right}} td:first-child{{text-align:left}}
</style></head><body>
<h1>Model run {run['id']}: {esc(str(run['name']))}</h1>
<p>device {esc(run['device'])}, backend {esc(run['backend'])}, scheduler {esc(run['scheduler'])},
{run['trials']} trials, status {esc(run['status'])}</p>
<table><tr><th>workload</th><th>calls</th><th>trials</th><th>default us</th><th>best us</th>
<th>speedup over default</th><th>retired</th></tr>{rows}</table>
{plots}
</body></html>
"""
