"""Which task gets the next round of trials: one global budget spent where it buys the most end-to-end time.

A task is one workload of a model, weighted by how often it runs per forward; the objective is the model's time
in its tuned ops, sum(calls x best latency). The gradient scheduler follows Ansor's (and MetaSchedule's
GradientBased, alpha 0.2, window 3): each task's expected drop in that sum per trial is a mix of its recent drop
(the window) and an optimistic forward guess (its latency could keep falling like its distance to its floor /
trials, the floor being its flops at the device's peak, which the run's fastest task measures), times its calls,
with Ansor's similar-task term: a task far below the throughput another task of its structure (the workload less
its sizes, Workload.structure) reached is expected to gain the difference. Round robin and an equal split stay, so
the three can be compared.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from autotile.search.task import BATCH, DRIFT_MIN

ALPHA = 0.2  # weight of the backward (observed) gradient against the forward guess
WINDOW = 3  # rounds the backward gradient looks back
BETA = 2.0  # Ansor's: a task under 1/BETA of its structure's best throughput elsewhere is behind what it can reach
PATIENCE = 4  # rounds without a gain of MIN_GAIN before a task is retired
MIN_GAIN = 0.01
GIVE_UP = 32  # trials after which a task with no verified config at all is retired
PEAK_SLACK = 1.1  # the run's fastest task (flops per microsecond) is taken to run within 10% of the device's peak
OFFER_WITHIN = 1 / DRIFT_MIN  # a similar task this close to a task's throughput, or above it, may hold its winner


@dataclass
class TaskState:
    """One task's progress in a model run: trials spent, its best latency after each round, why it stopped."""

    key: str
    calls: int
    trials: int = 0
    curve: list = field(default_factory=list)  # [trials, best latency us or None] after each round
    retired: str | None = None  # "exhausted", "converged", "max-trials", or None while it is tuned
    default_latency_us: float | None = None
    run_id: int | None = None  # the task's own tuning run (its measurements carry it)
    structure: str = ""  # its workload's less its sizes: tasks of one structure are "similar" (Ansor's term)
    flops: float = 0.0

    @property
    def best(self) -> float | None:
        return next((lat for _, lat in reversed(self.curve) if lat is not None), None)

    @property
    def throughput(self) -> float:
        """Flops per microsecond at its best latency; 0 before it has one."""
        return self.flops / self.best if self.best and self.flops else 0.0

    @property
    def cost(self) -> float | None:
        """Its share of the forward, in microseconds: calls x best (else default) latency."""
        latency = self.best if self.best is not None else self.default_latency_us
        return None if latency is None else self.calls * latency

    def stalled(self) -> bool:
        """No gain of MIN_GAIN over the last PATIENCE rounds."""
        if len(self.curve) <= PATIENCE or self.best is None:
            return False
        then = self.curve[-1 - PATIENCE][1]
        return then is not None and self.best > then * (1 - MIN_GAIN)


class Scheduler:
    name = "base"
    retires_converged = False  # whether a task that stopped improving is retired (the others tune to the end)

    def __init__(self, budget_trials: int | None = None):
        self.budget_trials = budget_trials

    def next(self, tasks: list[TaskState]) -> TaskState | None:
        """The task to tune next, or None when every task is retired."""
        active = [t for t in tasks if t.retired is None]
        return self.pick(active, tasks) if active else None

    def pick(self, active: list[TaskState], tasks: list[TaskState]) -> TaskState:
        raise NotImplementedError

    def round_limit(self, task: TaskState, tasks: list[TaskState]) -> int | None:
        """The most trials `task` may get in its next round (None: a whole batch)."""
        return None


class RoundRobin(Scheduler):
    """Each active task in turn, the one with the fewest trials first."""

    name = "round-robin"

    def pick(self, active, tasks):
        return min(active, key=lambda t: t.trials)


class EqualSplit(Scheduler):
    """The budget split evenly, tuned one task after another (what tuning each workload alone does)."""

    name = "equal"

    def pick(self, active, tasks):
        behind = [t for t in active if t.trials < self.share(len(tasks))]
        return behind[0] if behind else min(active, key=lambda t: t.trials)

    def share(self, n_tasks: int) -> int:
        return (self.budget_trials or 0) // n_tasks  # of every task's, retired or not: each gets its own

    def round_limit(self, task, tasks):
        """A task's last round stops at its share, not at the end of a batch: the last task's share is not cut."""
        left = self.share(len(tasks)) - task.trials
        return left if left > 0 else None


class Gradient(Scheduler):
    """Tasks without a verified latency first (the warm-up); then the largest expected drop of the objective."""

    name = "gradient"
    retires_converged = True

    def pick(self, active, tasks):
        unknown = [t for t in active if t.best is None and t.trials < BATCH]
        if unknown:
            return min(unknown, key=lambda t: t.trials)
        best_throughput = {}  # per structure: the fastest flops per microsecond any of its tasks reached
        for t in active:
            if t.throughput:
                best_throughput[t.structure] = max(best_throughput.get(t.structure, 0.0), t.throughput)
        peak = max((t.throughput for t in tasks), default=0.0)  # retired tasks too: they measured the device
        return max(active, key=lambda t: gain_per_trial(t, best_throughput.get(t.structure), peak))


def advance(task: TaskState, scheduler: Scheduler, *, trials: int, best: float | None, exhausted: bool,
            cap: int | None) -> None:
    """Note a round's outcome on `task`: its trials, its best latency now, and whether it is retired."""
    task.trials = trials
    task.curve.append([trials, best])
    if exhausted:
        task.retired = "exhausted"
    elif task.best is None and trials >= GIVE_UP:
        task.retired = "no-valid-config"
    elif cap is not None and trials >= cap:
        task.retired = "max-trials"
    elif scheduler.retires_converged and task.stalled():
        task.retired = "converged"


def similar_leads(task: TaskState, tasks) -> list[TaskState]:
    """The other tasks of `task`'s structure whose best runs above OFFER_WITHIN of its throughput: their winners
    are worth a trial of `task`'s. Only a faster one is not enough: two tasks that run level read up to 15% apart
    (a warm-up timing has no anchor to correct it). In a GPT block's run, FC1's default read 3365 us and re-timed
    at 3780; QKV then looked 0.6% slower per flop, FC1 never tried QKV's winners, and ended at 180 GFLOP/s where
    the other seeds' FC1 reached 210 (Zen 4)."""
    own = task.throughput
    return [t for t in tasks if t is not task and t.structure == task.structure and t.throughput
            and t.throughput > OFFER_WITHIN * own]


def gain_per_trial(task: TaskState, similar_throughput: float | None = None, peak_throughput: float = 0.0) -> float:
    """The expected drop of calls x latency from one more trial of `task` (microseconds); 0 while it has no
    verified latency (after its warm-up). Ansor's forward guess is the larger of latency / trials and the distance
    to BETA x the latency the task would have at the best throughput its structure reached on another task
    (`similar_throughput`, flops per microsecond).

    Ansor's latency / trials takes every task to be able to fall to zero. It cannot fall below its flops at the
    device's peak (`peak_throughput`, the run's fastest task, within PEAK_SLACK), so the guess is the distance to
    that floor / trials; a memory-bound task's floor is near zero, and its guess Ansor's. Without the floor, a GPT
    block's GEMMs at 95% of the FMA peak after their warm-up were guessed to gain 8x what attention at 45% would,
    and attention kept its 9 warm-up trials to the end: 435 us where round robin's reached 300 (Zen 3)."""
    best = task.best
    if best is None:
        return 0.0
    floor = task.flops / (PEAK_SLACK * peak_throughput) if peak_throughput and task.flops else 0.0
    forward = max(best - floor, 0.0) / max(task.trials, 1)
    if similar_throughput and task.flops:
        forward = max(forward, best - BETA * task.flops / similar_throughput)
    points = [(n, lat) for n, lat in task.curve if lat is not None]
    backward = 0.0
    if len(points) > WINDOW:
        (n0, lat0), (n1, lat1) = points[-1 - WINDOW], points[-1]
        backward = max(lat0 - lat1, 0.0) / max(n1 - n0, 1)
    return task.calls * (ALPHA * backward + (1 - ALPHA) * forward)


SCHEDULERS = {s.name: s for s in (Gradient, RoundRobin, EqualSplit)}
