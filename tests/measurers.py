"""The real measurer with a known distortion: a test fixes what the tuner sees (a template far behind, a default
that loses) while every candidate is still built, verified against the reference and timed."""


def scale(result, factor: float) -> None:
    """`result` read `factor` x what it measured (its run count kept)."""
    result.latency = {k: v if k == "runs" else v * factor for k, v in result.latency.items()}


class Scaled:
    """The real measurer; each verified candidate of a batch (and each timing of its anchor) reads
    `factor(workload, result)` x what it measured."""

    def __init__(self, real, factor):
        self.real, self.factor = real, factor

    def measure(self, workload, configs, repeat: int = 10, anchor=None):
        results = self.real.measure(workload, configs, repeat, anchor)
        for r in [*results, *results.anchors]:
            if r.ok:
                scale(r, self.factor(workload, r))
        return results

    def __getattr__(self, name):
        return getattr(self.real, name)
