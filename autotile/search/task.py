"""One workload's search, a batch at a time: its competing templates' searchers, the measuring and the recording.

`tune` runs one to the end of its trials; the model scheduler (autotile/modeltune) keeps one per workload and
advances whichever buys the most end-to-end time. Every result is recorded as it comes, so a kill loses at most
the candidates being built or timed at that moment, and a continued search never measures a recorded config again.
"""

from __future__ import annotations

import math
import statistics
import time

from autotile.costmodel.transfer import OWN_ENOUGH
from autotile.db.store import kernel_latency
from autotile.search.measure import MeasureResult

BATCH = 8  # candidates per round: built together, then timed one by one
FIRST_BATCH_UNDER_BUDGET = 2
REMEASURE_TOP = 3
REMEASURE_ROUNDS = 3  # each round times every one of the best once, so they share the host's pace
REMEASURE_REPEAT = 4
REMEASURE_MIN_REPEAT_S = 0.04
REMEASURE_SECONDS = REMEASURE_ROUNDS * REMEASURE_REPEAT * REMEASURE_MIN_REPEAT_S  # at least, per re-measured config
MIN_PACES = 2  # batches anchored before a template's pace is known: one reading is too noisy a reference
DRIFT_MIN = 1.15  # a batch this much slower than the template's typical pace ran in a slow spell (noise: 2-5%)
PROBE = 2  # a competing template's first round once another leads: its default and one more
EXPLORE_SHARE = 3  # a competing template is tried again once it has fewer than 1/3 of the leader's trials,
EXPLORE_WITHIN = 1.5  # if its best is within 1.5x the leader's: direct 3x3 convs at 2.6x Winograd's took a
# quarter of a ResNet task's trials, not one of them near (Zen 4)


class TaskTuner:
    """The search of one workload on one device and backend, recorded under run `run_id`. `spaces` are the
    competing templates' spaces; `done` the trials the run already recorded per template (a continued run)."""

    def __init__(self, workload, spaces, *, db, device, backend, run_id: int, measurer, options, cost_model=None,
                 bar=None, done: dict[str, int] | None = None):
        self.workload, self.db, self.device, self.backend = workload, db, device, backend
        from autotile.ops import default_template

        first = default_template(workload, device.fingerprint, backend.name).name  # the one untuned ops run
        self.spaces = {s.template: s for s in sorted(spaces, key=lambda s: s.template != first)}
        self.versions = backend.versions()
        self.run_id, self.measurer, self.options, self.bar = run_id, measurer, options, bar
        self._cost_model = cost_model  # for the first template's searcher (the caller's model, when given)
        self._searchers: dict = {}
        self._history_marks: dict[str, int] = {}  # template -> newest record its searcher's training rows include
        self._levels: dict[str, dict] = {}  # template -> other devices' levels its searcher's foreign rows are at
        self.trials = {t: (done or {}).get(t, 0) for t in self.spaces}  # per template, earlier ones included
        self.exhausted: set[str] = set()
        self._paces: dict[str, list[float]] = {}  # per template: each batch's anchor over the incumbent's record
        self._inferred: set[str] = set()  # configs whose figure is a batch's drift guess, not a timing beside another
        self.history, self.results = [], []  # results: (MeasureResult, template) of this process
        self._seconds = 0.0  # spent measuring and recording them

    @property
    def done(self) -> int:
        return sum(self.trials.values())

    @property
    def finished(self) -> bool:
        """Every template's space has nothing left to propose."""
        return len(self.exhausted) == len(self.spaces)

    def searcher(self, template: str):
        if template not in self._searchers:
            from autotile.search.strategy import STRATEGIES
            from autotile.search.tuner import _seed_configs

            space, backend = self.spaces[template], self.backend
            searcher = backend.searcher(
                STRATEGIES[self.options.strategy], space, workload=self.workload, db=self.db, device=self.device,
                measurer=self.measurer, seed=self.options.seed,
                seeds=_seed_configs(self.db, self.device, self.workload, space, backend.name),
                seen=self.db.measured_config_keys(self.device.key, self.workload.key, backend.name),
                cost_model=self._cost_model if not self._searchers else None)
            searcher.known = self._known(space)
            self._searchers[template] = searcher
            if self._shares_history(searcher):
                from autotile.search.history import levels, newest_id

                self._history_marks[template] = newest_id(self.db, self.device, space, backend.name)
                if len(getattr(searcher, "foreign", ())):
                    records = self.db.measurements(backend=backend.name, template=template)
                    self._levels[template] = levels(records, self.device.key)
        return self._searchers[template]

    def _shares_history(self, searcher) -> bool:
        """Its cost model trains on past records as the space's features (a backend with compile features
        of its own, Triton's, says no)."""
        return hasattr(searcher, "history") and getattr(self.backend, "shares_history", False)

    def _refresh_history(self, template: str) -> None:
        """Other tasks' measurements of this template since the searcher last looked, added to its cost model's
        training rows: a model run tunes its tasks in turns, and each turn teaches the next (the cross-task
        refresh; a single-workload run has none to add). Other devices' rows are set at this device's level
        again once configs both measured anchor it (`_relevel_foreign`)."""
        searcher = self._searchers[template]
        if template not in self._history_marks:
            return
        from autotile.search.history import newer_rows

        rows, self._history_marks[template] = newer_rows(self.db, self.device, self.spaces[template], self.workload,
                                                         self.backend.name, self._history_marks[template])
        searcher.history.extend(rows)
        if template in self._levels and len(searcher.history) + len(searcher.measured) >= OWN_ENOUGH:
            del self._levels[template]  # the foreign rows weigh nothing from here on: no query per round for them
        if template in self._levels:
            self._relevel_foreign(template)

    def _relevel_foreign(self, template: str) -> None:
        """The warm start's first rounds measure the default and the other devices' winners here: configs both
        devices timed, whose ratio sets the other device's rows at this one's level (search/history.py `levels`).
        A device without such configs keeps the level its rows were given when the searcher was made: matching
        its best to this device's best again at every round measured worse (their best read as the default's
        level; the 2026-12-06 note)."""
        from autotile.search.history import foreign_rows, levels

        searcher, before = self._searchers[template], self._levels[template]
        records = self.db.measurements(backend=self.backend.name, template=template)
        now = {key: level if level.anchors else before.get(key, level)
               for key, level in levels(records, self.device.key).items()}
        if now != before:
            self._levels[template] = now
            searcher.set_foreign(foreign_rows(self.db, self.device, self.spaces[template], self.workload, records,
                                              now))

    def _known(self, space) -> list:
        """This workload's verified configs of the template measured here before (with this toolchain): the
        parents a continued or repeated search breeds from, so it goes on from where the last one stood."""
        known = []
        from autotile.db.store import SERVED

        for r in self.db.measurements(device=self.device.key, workload=self.workload.key, backend=self.backend.name,
                                      status="ok", template=space.template):
            if r.get("versions") != self.versions or r.get("trust", "local") not in SERVED:
                continue
            try:
                known.append((space.config_type.from_dict(r["config"]), r["latency_us"]))
            except (TypeError, ValueError, KeyError, AttributeError):
                continue
        return known

    def offer(self, template: str, config: dict) -> bool:
        """Measure `config` (a record's) first in the template's next round, unless this task has it already: a
        model run offers each task the winners of its similar tasks (modeltune/run.py)."""
        space = self.spaces.get(template)
        if space is None or template in self.exhausted:
            return False
        try:
            candidate = space.config_type.from_dict(config)
        except (TypeError, ValueError, KeyError, AttributeError):  # a record of another version's knobs
            return False
        return space.valid(candidate) and self.searcher(template).suggest(candidate)

    def step(self, trials: int, deadline: float | None = None) -> int:
        """Up to `trials` more for one template (see `next_template`); the number measured."""
        template = self.next_template()
        if template is None:
            return 0
        untried = [t for t in self.spaces if self.trials[t] == 0 and t not in self.exhausted]
        if untried and self.done:  # the others have a lead: a probe, enough to tell a close rival from one far behind
            trials = min(trials, PROBE)
        elif untried:  # the default template first, with its share of a round
            trials = math.ceil(trials / len(untried))
        before = self.done
        self.search(template, trials, deadline)
        return self.done - before

    def next_template(self) -> str | None:
        """Where the next trials go when templates compete: one never tried, else one fallen below a third of
        the leader's trials whose best is within EXPLORE_WITHIN of the leader's (exploration), else the leader
        (the fastest verified config so far)."""
        open_templates = [t for t in self.spaces if t not in self.exhausted]
        if len(open_templates) <= 1:
            return open_templates[0] if open_templates else None
        untried = [t for t in open_templates if self.trials[t] == 0]
        if untried:
            return untried[0]
        from autotile.search.tuner import current_best

        best = {t: current_best(self.db, self.device, self.workload, self.backend.name, t) for t in open_templates}
        latency = {t: best[t]["latency_us"] if best[t] else math.inf for t in open_templates}
        leader = min(open_templates, key=latency.get)
        behind = [t for t in open_templates if EXPLORE_SHARE * self.trials[t] < self.trials[leader]
                  and latency[t] <= EXPLORE_WITHIN * latency[leader]]
        return min(behind, key=lambda t: self.trials[t]) if behind else leader

    def search(self, template: str, trials: int, deadline: float | None) -> None:
        """Propose, measure, record and learn until `trials` more are done, the deadline or the space's end."""
        searcher = self.searcher(template)
        self._refresh_history(template)
        target = self.done + trials
        while self.done < target and (deadline is None or time.perf_counter() < deadline):
            configs = searcher.propose(_batch_size(target - self.done, deadline, self._pace()))
            if not configs:
                self.exhausted.add(template)
                break
            start = time.perf_counter()
            incumbent = self._incumbent(template)
            batch = self.measurer.measure(self.workload, configs, anchor=incumbent)
            if incumbent is not None:
                self._at_steady_pace(batch, incumbent, template, deadline)
            for r in batch:
                self.record(r, template)
                self.history.append({"trial": self.done, "latency_us": r.latency_us if r.ok else None,
                                     "status": r.status, "failure": r.failure and r.failure.value,
                                     "template": template, "config": r.config.key, "error": r.error})
                self.trials[template] += 1
            self._seconds += time.perf_counter() - start
            self.results.extend((r, template) for r in batch)
            searcher.notify(batch)
            if self.bar is not None:
                best_so_far = min((r for r, _ in self.results if r.ok), key=lambda r: r.latency_us, default=None)
                self.bar.update(self.done, best_so_far.gflops if best_so_far else None)

    def _incumbent(self, template: str) -> MeasureResult | None:
        """The template's fastest verified result in this process: the anchor its next batch is timed beside."""
        return min((r for r, t in self.results if r.ok and t == template), key=lambda r: r.latency_us, default=None)

    def _at_steady_pace(self, batch, incumbent: MeasureResult, template: str, deadline: float | None) -> None:
        """Set a batch's latencies at the pace the incumbent was recorded at. This host runs 1.2-2.5x slower for
        seconds to minutes at a time (another VM's load): a batch timed in such a spell read slow, and lost to
        an incumbent timed outside it even where it was faster (Zen 4).

        The incumbent is timed right before and after the batch's runs (Measurer.measure's anchor); the faster
        of the two, over the incumbent's record, is the batch's pace. A record is the fastest reading of a batch
        (the winner's curse), so the pace runs above 1 even on a steady host (1.10-1.15 in a third of a GPT
        run's batches, Zen 4); the drift is the pace over the template's typical pace so far (the median of at
        least MIN_PACES), and where it is over DRIFT_MIN the batch's figures are divided by it (kept in each
        record as `drift`) and any that would take the lead is confirmed beside the incumbent (`_confirm`).
        Where the anchor runs DRIFT_MIN x faster than its record, that record was made in a slow spell: it is
        lowered, as a re-measurement."""
        timings = [a for a in getattr(batch, "anchors", ()) if a.ok]
        if not timings:
            return
        now = min(timings, key=lambda a: a.latency_us)
        if now.latency_us * DRIFT_MIN < incumbent.latency_us:
            incumbent.latency, incumbent.gflops = now.latency, now.gflops
            self._inferred.discard(incumbent.config.key)  # a timing now, not a guess
            self.record(incumbent, template)
        paces = self._paces.setdefault(template, [])
        pace = now.latency_us / incumbent.latency_us
        drift = pace / statistics.median(paces) if len(paces) >= MIN_PACES else 1.0
        paces.append(pace)
        if drift > DRIFT_MIN:
            set_back = [r for r in batch if r.ok]
            read = {r.config.key: (r.latency, r.gflops) for r in set_back}
            for r in set_back:
                at_pace(r, drift)
            self._inferred.update(read)
            self._confirm(incumbent, set_back, read, template, deadline)

    def _confirm(self, incumbent: MeasureResult, set_back: list, read: dict, template: str,
                 deadline: float | None) -> None:
        """Time the set-back results that would take the lead (the best REMEASURE_TOP - 1) beside the incumbent,
        and set them at its level times their ratio to it: a drift read from two anchor timings can be wrong
        (an anchor caught at the end of a spell the batch had left), and a lead taken on it alone was a record
        of 1880 us for a QKV GEMM that runs at 2417 (GPT block, Zen 4), served for good. Their figures as read,
        over the confirmed ones, are the batch's real drift: the rest of the batch is set at that instead.
        Confirmed beside an incumbent whose own figure is a drift guess, they stay guesses: taken as timed, such
        a guess set the level of the run's closing re-timing (a 1x1 conv recorded at 42 us, 303 GFLOP/s on two
        Zen 4 cores whose FMA peak is about 237, ran at 105 beside its default at 122)."""
        leads = sorted((r for r in set_back if r.latency_us < incumbent.latency_us), key=lambda r: r.latency_us)
        if not leads:
            return
        again = self._side_by_side([incumbent, *leads[:REMEASURE_TOP - 1]], deadline)
        reference = again.get(incumbent.config.key)
        if reference is None:  # no time left for it
            return
        if not reference.ok:
            _take(incumbent, reference)
            self.record(incumbent, template)
            return
        pairs = [(r, again[r.config.key]) for r in [incumbent, *leads] if r.config.key in again]
        confirmed = {r.config.key for r in _set_at_level(pairs, incumbent, reference)}
        self.record(incumbent, template)
        real = [kernel_latency(read[r.config.key][0]) / r.latency_us for r, _ in pairs[1:] if r.ok]
        drift = statistics.median(real) if real else None
        for r in set_back:
            if drift is None or not r.ok or r.config.key in confirmed:
                continue
            r.latency, r.gflops = read[r.config.key]
            if drift > DRIFT_MIN:
                at_pace(r, drift)
        if incumbent.config.key not in self._inferred:  # set at a guessed level, they are guesses too
            self._inferred.difference_update(confirmed)

    def _side_by_side(self, results: list, deadline: float | None) -> dict[str, MeasureResult]:
        """`results`' configs timed again in turns, round after round, so they share the host's pace whatever it
        is: config key -> its fastest re-timing, or its failure (no round starts that would pass the deadline)."""
        again: dict[str, MeasureResult] = {}
        for _ in range(REMEASURE_ROUNDS):
            if deadline is not None and \
                    time.perf_counter() + len(results) * REMEASURE_SECONDS / REMEASURE_ROUNDS > deadline:
                break
            for r in results:
                key = r.config.key
                if key in again and not again[key].ok:
                    continue
                now = self.measurer.run(self.workload, r.config, r.path, repeat=REMEASURE_REPEAT,
                                        min_repeat_s=REMEASURE_MIN_REPEAT_S)
                now.build_seconds = r.build_seconds
                if key not in again or not now.ok or now.latency_us < again[key].latency_us:
                    again[key] = now
        return again

    def _pace(self) -> float | None:
        """Seconds per trial so far in this process (building, timing and recording), None before the first."""
        return self._seconds / len(self.results) if self.results else None

    def record(self, r: MeasureResult, template: str) -> None:
        _record(self.db, self.device, self.workload, self.backend.name, template, r, self.versions, self.run_id)

    def remeasure_top(self, deadline: float | None, top: int = REMEASURE_TOP) -> None:
        """Time the few best again, side by side, and set their records in the order the re-timing found.

        A record is the fastest reading of its batch, made at that batch's pace (or set at a drift read from
        its anchor), so the order of the first figures is noise at a few percent: a GPT run's recorded best QKV
        GEMM ran at 2062 us beside three configs recorded at 2158-2162 that ran at 2041-2050, and a batch set at
        a misread drift left a record of 2429 us for a kernel that runs at 2850 (Zen 4). Timed in turns, the few
        share the host's pace whatever it is, so their ratios are right even in a slow spell. The fastest of
        them whose record was timed, not inferred from a drift, is the reference: it keeps the faster of its
        record and its re-timing (a burst of load now cannot demote it or raise the level), and the others are
        set at that level times their ratio to it (`at_pace`: the re-timing's drift kept). A config that fails
        now is recorded as failed."""
        best = sorted(((r, t) for r, t in self.results if r.ok), key=lambda rt: rt[0].latency_us)[:top]
        again = self._side_by_side([r for r, _ in best], deadline)
        timed = [(r, t, again[r.config.key]) for r, t in best if r.config.key in again]
        ok = [(r, now) for r, _, now in timed if now.ok]
        observed = [(r, now) for r, now in ok if r.config.key not in self._inferred]
        if ok:
            reference, reference_now = min(observed or ok, key=lambda pair: pair[1].latency_us)
            _set_at_level(ok, reference if observed else None, reference_now)
        for _, template, now in timed:
            self.record(now, template)

    @property
    def failed(self) -> int:
        return sum(1 for r, _ in self.results if not r.ok)


def _set_at_level(pairs, reference: MeasureResult | None, reference_now: MeasureResult) -> list:
    """Each (result, its re-timing) set at the reference's level times its ratio to the reference in the
    re-timing; the level is the faster of the reference's record and its re-timing (None: no record to trust,
    the re-timing itself). Each result takes its re-timing's outcome, figures or failure; the ok ones are returned."""
    level = reference_now.latency_us if reference is None else min(reference.latency_us, reference_now.latency_us)
    drift = reference_now.latency_us / level
    for r, now in pairs:
        if now.ok and drift > 1:
            at_pace(now, drift)
        _take(r, now)
    return [r for r, _ in pairs if r.ok]


def _take(result: MeasureResult, now: MeasureResult) -> None:
    """`result` takes the outcome of its re-timing `now`: its figures, or its failure."""
    result.status, result.error, result.failure = now.status, now.error, now.failure
    result.latency, result.gflops = now.latency, now.gflops


def at_pace(result: MeasureResult, drift: float) -> None:
    """`result`'s timings divided by `drift`, the host's slowdown while it was timed (kept beside them)."""
    result.latency = {**{k: v if k == "runs" else v / drift for k, v in result.latency.items()}, "drift": drift}
    result.gflops = result.gflops and result.gflops * drift


def _record(db, device, workload, backend, template: str, r: MeasureResult, versions, run_id):
    db.record_measurement(
        device=device.key, workload=workload.key, backend=backend, template=template, config_key=r.config.key,
        config=r.config.to_dict(), status=r.status, failure=r.failure and r.failure.value, error=r.error,
        latency=r.latency or None, gflops=r.gflops, threads=r.threads, versions=versions, run_id=run_id)


def _batch_size(trials_left: int, deadline: float | None, seconds_per_trial: float | None) -> int:
    """BATCH, or fewer when the time left holds fewer trials (at the pace so far): a batch is never cut short,
    so a big one started just before the deadline would overrun the budget by a whole batch."""
    size = min(BATCH, trials_left)
    if deadline is None:
        return size
    if seconds_per_trial is None:  # no pace yet: a first batch as small as the build pool
        return min(size, FIRST_BATCH_UNDER_BUDGET)
    fits = int((deadline - time.perf_counter()) / max(seconds_per_trial, 1e-6))
    return max(1, min(size, fits))
