"""The tuning progress bar."""

from __future__ import annotations


class Progress:
    """A rich progress bar on stderr: trials done, best GFLOP/s so far."""

    def __init__(self, total: int, label: str, enabled: bool):
        self.enabled = enabled
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("best {task.fields[best]}"), TimeElapsedColumn(),
                            console=Console(stderr=True), transient=False)
        self.task = self.bar.add_task(label, total=total, best="-")
        self.bar.start()

    def update(self, done: int, best_gflops: float | None):
        if self.enabled:
            best = f"{best_gflops:.1f} GFLOP/s" if best_gflops else "-"
            self.bar.update(self.task, completed=done, best=best)

    def close(self):
        if self.enabled:
            self.bar.stop()
