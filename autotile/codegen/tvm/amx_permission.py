"""Whether this process may run AMX tile instructions, and the Linux permission they need.

Linux enables AMX's 8 KiB of tile state per process, on request: `arch_prctl(ARCH_REQ_XCOMP_PERM,
XFEATURE_XTILEDATA)` (syscall 158 with 0x1023 and 18). Until then the first tile instruction raises SIGILL. The
grant covers every thread of the process, those that already exist too, and is not inherited across exec, so each
process (every tuning worker too) asks before it loads an AMX kernel (autotile.search.artifacts.compiled). Where the
request fails (older kernels, sandboxes that filter arch_prctl), AMX templates are not offered and `autotile device`
says why.

AUTOTILE_AMX_EMULATE=1 offers the AMX templates on any x86 CPU with their tile instructions emulated
(autotile.codegen.tvm.amx): slow, for tests of everything around the instructions.
"""

from __future__ import annotations

import ctypes
import os
import platform
from dataclasses import dataclass
from functools import cache

SYS_ARCH_PRCTL = 158
ARCH_GET_XCOMP_PERM = 0x1022
ARCH_REQ_XCOMP_PERM = 0x1023
XFEATURE_XTILEDATA = 18
EMULATE_ENV = "AUTOTILE_AMX_EMULATE"


@dataclass(frozen=True)
class AmxStatus:
    usable: bool
    reason: str


def describe() -> str:
    """One line for people: whether AMX kernels are offered in this process, and why."""
    state = status()
    return f"AMX tile kernels: {'offered' if state.usable else 'not offered'} ({state.reason})"


def emulated() -> bool:
    """Tile instructions are emulated (AUTOTILE_AMX_EMULATE=1): the kernels run on any x86 CPU, slowly."""
    return os.environ.get(EMULATE_ENV, "") == "1"


def request_tile_state() -> int:
    """Ask Linux for the tile state; 0 when granted (or already), else the errno."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(SYS_ARCH_PRCTL, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) != 0:
        return ctypes.get_errno() or -1
    return 0


def tile_state_granted() -> bool:
    """Whether this process holds the tile state permission now (ARCH_GET_XCOMP_PERM)."""
    libc = ctypes.CDLL(None, use_errno=True)
    mask = ctypes.c_uint64(0)
    if libc.syscall(SYS_ARCH_PRCTL, ARCH_GET_XCOMP_PERM, ctypes.byref(mask)) != 0:
        return False
    return bool(mask.value >> XFEATURE_XTILEDATA & 1)


@cache
def status() -> AmxStatus:
    """Whether this process can run tile instructions; asks Linux for the permission the first time."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return AmxStatus(False, f"AMX needs Linux on x86-64, not {platform.system()} on {platform.machine()}")
    try:
        from autotile.db.device import cpu_flags

        flags = cpu_flags()
    except OSError as e:
        return AmxStatus(False, f"cannot read /proc/cpuinfo: {e}")
    missing = [f for f in ("amx_tile", "amx_bf16", "amx_int8") if f not in flags]
    if "amx_tile" in missing:
        return AmxStatus(False, "this CPU has no AMX (no amx_tile flag)")
    error = request_tile_state()
    if error:
        return AmxStatus(False, f"Linux refused the AMX tile state: arch_prctl(ARCH_REQ_XCOMP_PERM, "
                                f"XFEATURE_XTILEDATA) failed with {os.strerror(error) if error > 0 else error}")
    if not tile_state_granted():
        return AmxStatus(False, "arch_prctl granted the AMX tile state, but ARCH_GET_XCOMP_PERM does not show it")
    return AmxStatus(True, "granted" + (f" (the CPU lacks {', '.join(missing)})" if missing else ""))


def require_tiles(what: str) -> None:
    """Before an AMX kernel is loaded: this process holds the tile state (asked for the first time), or the
    instructions are emulated; else an AutotileError naming the kernel and the reason, never a SIGILL."""
    from autotile.errors import AutotileError

    state = status()  # asked even when emulating: on an AMX CPU the grant is then held all the same
    if not state.usable and not emulated():
        raise AutotileError(f"{what} runs AMX tile instructions, which this process cannot: {state.reason}")


def tiles_usable(fingerprint: dict | None, feature: str) -> bool:
    """Whether tile kernels using `feature` (amx_bf16, amx_int8) can run for this device in this process."""
    if emulated():
        return True
    flags = set((fingerprint or {}).get("flags", ()))
    return "amx_tile" in flags and feature in flags and status().usable
