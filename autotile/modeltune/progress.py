"""What a model run shows on stderr: the task table first, then one bar per task and one for the whole run with
the estimated forward time in the tuned ops as it falls."""

from __future__ import annotations

from autotile.modeltune.report import fmt


class ModelProgress:
    def __init__(self, run, enabled: bool):
        self.run, self.enabled, self.bar = run, enabled, None
        if enabled:
            from rich.console import Console

            self.console = Console(stderr=True, width=160)

    def table(self):
        """The task table: workload, calls per forward, trials so far, best and default latency, share."""
        if not self.enabled:
            return
        from rich.table import Table

        from autotile.modeltune.run import estimated_us, task_rows

        run = self.run
        table = Table("workload", "calls", "trials", "best us", "default us", "share",
                      title=f"model run {run.id}: {run.name} on {run.device.key} ({run.scheduler})")
        for row in task_rows(run.states):
            share = "-" if row["share"] is None else f"{100 * row['share']:.0f}%"
            table.add_row(row["workload"], str(row["calls"]), str(row["trials"]), fmt(row["best_latency_us"]),
                          fmt(row["default_latency_us"]), share)
        self.console.print(table)
        self.console.print(f"estimated forward in tuned ops: {fmt(estimated_us(run.states))} us; "
                           f"budget: {run.budget.get('trials') or '-'} trials, {run.budget.get('seconds') or '-'} s")
        self._start_bars()

    def _start_bars(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[note]}"), TimeElapsedColumn(), console=self.console)
        run = self.run
        self.overall = self.bar.add_task("[bold]all tasks", total=run.budget.get("trials"), completed=run.total,
                                         note="")
        cap = run.budget.get("max_trials_per_task")
        self.rows = {s.key: self.bar.add_task(f"  {s.key[:60]}", total=cap, completed=s.trials, note="")
                     for s in run.states}
        self.bar.start()
        self.update()

    def update(self):
        if self.bar is None:
            return
        from autotile.modeltune.run import estimated_us

        run = self.run
        self.bar.update(self.overall, completed=run.total, note=f"est {fmt(estimated_us(run.states))} us")
        for s in run.states:
            note = f"best {fmt(s.best)} us" + (f" ({s.retired})" if s.retired else "")
            self.bar.update(self.rows[s.key], completed=s.trials, note=note)

    def close(self):
        if self.bar is not None:
            self.bar.stop()
