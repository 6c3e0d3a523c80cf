"""Flash attention for bfloat16 on AMX tiles (Intel Xeon since Sapphire Rapids): its config space.

The flash loop of attention.flash (flash.py) with both products on tiles: S = Q K^T as 16 x 16 float32 tiles
(Q rows as A tiles, K packed in key pairs once per call as B tiles), the online softmax in float32 vectors,
P rounded once to bfloat16, and P V on tiles (P as A tiles, V packed in key pairs as B tiles) added to the
float32 output rows after they are rescaled. Two key tiles (or two head_dim tiles) per tile product, q_tiles rows
of 16 queries: 2 q_tiles x 2 C tiles + 2 A + 2 B fill the eight tile registers.

Offered for bfloat16 with head_dim a multiple of 32, only where the CPU has amx_tile and amx_bf16 and Linux
granted this process the tile state (autotile.codegen.tvm.amx_permission), or where the instructions are
emulated (AUTOTILE_AMX_EMULATE=1, for tests).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from autotile.codegen.tvm import amx_permission
from autotile.ops.attention.flash import _ceil_div
from autotile.ops.attention.workload import AttentionWorkload
from autotile.ops.space import Config, ConfigSpace

KEY_STEP = 32  # keys one P tile row holds (bfloat16)


@dataclass(frozen=True)
class AmxAttentionConfig(Config):
    q_tiles: int = 2  # 16-query tiles per q block
    block_kv: int = 64  # keys per block (whole tile steps of 32)
    q_blocks_per_task: int = 1  # q blocks a parallel work item runs in turn


def applies(workload: AttentionWorkload, fingerprint: dict | None = None) -> bool:
    return (workload.dtype == "bfloat16" and workload.head_dim % 32 == 0
            and amx_permission.tiles_usable(fingerprint, "amx_bf16"))


def preferred(workload: AttentionWorkload) -> bool:
    return True


class AmxAttentionSpace(ConfigSpace):
    config_type = AmxAttentionConfig
    template = "attention.flash_amx"

    def __init__(self, workload: AttentionWorkload):
        self.workload = workload
        self.domains = {"q_tiles": [1, 2], "block_kv": [32, 64, 128, 256], "q_blocks_per_task": [1, 2, 4]}

    @classmethod
    def for_device(cls, workload: AttentionWorkload, fingerprint: dict | None = None) -> AmxAttentionSpace:
        return cls(workload)

    def canonical(self, c: AmxAttentionConfig) -> AmxAttentionConfig:
        w = self.workload
        q_tiles = min(c.q_tiles, _ceil_div(w.seq_q, 16))
        block_kv = min(c.block_kv, _ceil_div(w.seq_kv, KEY_STEP) * KEY_STEP)
        n_q = _ceil_div(w.seq_q, 16 * q_tiles)
        per_task = max(d for d in range(1, min(c.q_blocks_per_task, n_q) + 1) if n_q % d == 0)
        return AmxAttentionConfig(q_tiles, block_kv, per_task)

    def default(self) -> AmxAttentionConfig:
        return self.canonical(AmxAttentionConfig())

    def features(self, c: AmxAttentionConfig) -> list[float]:
        w = self.workload
        log = math.log2
        n_q, n_kv = _ceil_div(w.seq_q, 16 * c.q_tiles), _ceil_div(w.seq_kv, c.block_kv)
        items = w.batch * w.heads * n_q // c.q_blocks_per_task
        return [log(w.batch), log(w.heads), log(w.seq_q), log(w.seq_kv), log(w.head_dim), w.heads / w.kv_heads,
                float(w.causal), w.pairs / (w.seq_q * w.seq_kv), c.q_tiles, log(c.block_kv), c.q_blocks_per_task,
                n_q * 16 * c.q_tiles * n_kv * c.block_kv / (w.seq_q * w.seq_kv), log(items), items % 2]
