"""Compile metadata as cost-model features, for backends whose candidates compile ahead of time (Triton).

A candidate's features are its config features followed by what the compiler made of it for the device's
arch (`CompileInfo.features()`: compiled, fits, shared memory, registers, spills, instruction mix). Compiles
cost 0.3-3 s each, so they are only paid where they are useful:

- measured candidates: the build already compiled them for this arch, so their metadata is a disk-cache read;
- unmeasured children of the evolution: a second, config-only model (the screen) ranks all of them, the top
  `shortlist` (a small multiple of what the round measures) are compiled, the ones that do not fit are
  dropped (never proposed, never a wasted trial) and the rest are reranked by the model that sees the compile
  features. The shortlisted winners are then built from the cache, so a round costs at most `shortlist`
  compiles instead of its batch's.
- past records (other shapes, earlier runs) contribute the compile metadata the disk cache holds, and a
  "known" flag of 0 where it holds none (nothing is compiled for history).
"""

from __future__ import annotations

import numpy as np

from autotile.search.strategy import EvolutionSearch

SHORTLIST_FACTOR = 2  # compile this many times the configs a round exploits (at least SHORTLIST_MIN)
SHORTLIST_MIN = 8


class CompileFeatures:
    """features(config) = config features + [known] + CompileInfo features for `arch`, memoized per config.

    `compile_many(configs) -> [CompileInfo]` compiles several at once (the measurer's build workers); without
    it they are compiled here, one by one.
    """

    def __init__(self, workload, space, arch: int, compile_many=None):
        from autotile.codegen.triton.aot import CompileInfo

        self.workload, self.space, self.arch = workload, space, arch
        self.compile_many = compile_many
        self.n_config = len(space.features(space.default()))
        self.n_compile = 1 + CompileInfo.feature_count()
        self.infos: dict = {}  # config key -> CompileInfo
        self.compiled = 0  # compiles this object asked for (cache hits included), for the report

    @property
    def width(self) -> int:
        return self.n_config + self.n_compile

    def _program(self, config):
        from autotile.ops import triton_program

        return triton_program(self.workload, config)

    def known(self, config):
        """The CompileInfo of `config` from memory or the disk cache, or None: never compiles."""
        from autotile.codegen.triton.aot import cached_info

        if config.key not in self.infos:
            info = cached_info(self._program(config), self.arch)
            if info is None:
                return None
            self.infos[config.key] = info
        return self.infos[config.key]

    def ensure(self, configs) -> dict:
        """config key -> CompileInfo for every config, compiling the ones neither memory nor disk holds."""
        from autotile.codegen.triton.aot import compile_program

        missing = [c for c in configs if self.known(c) is None]
        if missing:
            self.compiled += len(missing)
            if self.compile_many is not None:
                infos = self.compile_many(missing)
            else:
                infos = [compile_program(self._program(c), self.arch) for c in missing]
            for c, info in zip(missing, infos):
                self.infos[c.key] = info
        return {c.key: self.infos[c.key] for c in configs}

    def compile_vector(self, info) -> list[float]:
        return [1.0, *info.features()] if info is not None else [0.0] * self.n_compile

    def __call__(self, config) -> list[float]:
        """Full features; a config with no cached compile gets known = 0 (this never compiles)."""
        return self.space.features(config) + self.compile_vector(self.known(config))

    def of(self, workload, space, config) -> list[float]:
        """Full features of a config of another workload (past records): cached compiles only."""
        if workload.key == self.workload.key:
            return self(config)
        from autotile.codegen.triton.aot import cached_info
        from autotile.ops import triton_program

        return space.features(config) + self.compile_vector(cached_info(triton_program(workload, config),
                                                                        self.arch))


class CompileAwareSearch(EvolutionSearch):
    """Evolution whose cost model sees compile metadata; a config-only screen model picks what to compile.

    `cost_model` learns from full features (`compiled(config)`), `screen_model` from their config prefix;
    both are refit on the same measurements. Until they are trained the search breeds and samples exactly as
    EvolutionSearch does (builds then compile what is measured, and refuse what does not fit).
    """

    name = "evolution"

    def __init__(self, space, *, compiled: CompileFeatures, screen_model=None, shortlist_factor=SHORTLIST_FACTOR,
                 shortlist_min=SHORTLIST_MIN, seed: int = 0, **kwargs):
        from autotile.costmodel import XGBCostModel

        self.compiled = compiled
        self.screen_model = screen_model or XGBCostModel(nthread=1, seed=seed)
        self.shortlist_factor, self.shortlist_min = shortlist_factor, shortlist_min
        self.pruned: list = []  # shortlisted configs dropped before measurement: they do not fit the target
        self.shortlisted = 0
        super().__init__(space, seed=seed, features=compiled, **kwargs)

    def _fit(self):
        if self.cost_model is None:
            return
        X, y = self._own_rows()
        self._teach(self.cost_model, X, y)
        n = self.compiled.n_config
        if len(self.foreign):  # the screen learns the foreign rows' config prefix at the same weight
            self.screen_model.set_prior(self.foreign.X[:, :n], self.foreign.latency, self.foreign_weight)
        if len(y):
            self.screen_model.update(X[:, :n], y)
        else:
            self.screen_model.refit()

    def _rank(self, children: list, n_exploit: int) -> list:
        if not children or self.cost_model is None or not self.screen_model.trained:
            return children
        screen = self.screen_model.predict(np.array([self.space.features(c) for c in children], dtype=float))
        ranked = [children[i] for i in np.argsort(-screen, kind="stable")]
        k = min(len(ranked), max(self.shortlist_min, self.shortlist_factor * max(n_exploit, 1)))
        short, rest = ranked[:k], ranked[k:]
        infos = self.compiled.ensure(short)
        self.shortlisted += len(short)
        fitting = []
        for c in short:
            if infos[c.key].fits:
                fitting.append(c)
            else:
                self.seen.add(c.key)  # known not to fit: never proposed
                self.pruned.append(c)
        if fitting and self.cost_model.trained:
            scores = self.cost_model.predict(np.array([self.compiled(c) for c in fitting], dtype=float))
            fitting = [fitting[i] for i in np.argsort(-scores, kind="stable")]
        return fitting + rest


def compile_info_task(workload_dict: dict, config_dict: dict, arch: int, cache_dir: str) -> dict:
    """Build-worker side of CompileFeatures.compile_many: the CompileInfo (as a dict) of one candidate."""
    import os
    from dataclasses import asdict

    from autotile.codegen.triton.aot import compile_program
    from autotile.ops import triton_program
    from autotile.search.triton_tasks import decode

    os.environ["AUTOTILE_CACHE_DIR"] = cache_dir
    workload, config = decode(workload_dict, config_dict)
    return asdict(compile_program(triton_program(workload, config), arch))


def pool_compiler(pool, workload, arch: int, timeout: float = 300.0):
    """compile_many for CompileFeatures through a WorkerPool (the measurer's build workers)."""
    from autotile.codegen.triton.aot import CompileInfo
    from autotile.paths import kernel_cache_dir

    def compile_many(configs):
        items = [(workload.to_dict(), c.to_dict(), arch, str(kernel_cache_dir())) for c in configs]
        out = []
        for r in pool.map("autotile.search.compiled:compile_info_task", items, timeout):
            if isinstance(r, dict):
                out.append(CompileInfo(**r))
            else:  # a worker timeout or crash: treated as a failed compile, so the config is dropped
                out.append(CompileInfo(arch, False, error=str(r)[-800:]))
        return out

    return compile_many

