"""Times numpy's GEMM (+ bias + gelu) in its own process; prints JSON {gflops, kernel}.

Run with OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset so OpenBLAS picks its best kernel here.
"""

import json
import sys
import time

import numpy as np
import threadpoolctl
from scipy.special import erf


def main():
    m, n, k, epilogue, min_time = json.loads(sys.argv[1])
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    bias = rng.standard_normal(n, dtype=np.float32)

    def call():
        c = a @ b
        if "bias" in epilogue:
            c += bias
        if "gelu" in epilogue:
            c = 0.5 * c * (1.0 + erf(c * np.float32(0.7071067811865476)))
        return c

    for _ in range(3):
        call()
    start = time.perf_counter()
    call()
    number = max(1, int(min_time / 7 / max(time.perf_counter() - start, 1e-7)))
    samples = []
    for _ in range(7):
        start = time.perf_counter()
        for _ in range(number):
            call()
        samples.append((time.perf_counter() - start) / number)
    samples.sort()
    info = [i for i in threadpoolctl.threadpool_info() if i.get("internal_api") == "openblas"]
    kernel = f"{info[0].get('architecture')} ({info[0].get('num_threads')} threads)" if info else "unknown"
    print(json.dumps({"gflops": 2 * m * n * k / samples[len(samples) // 2] / 1e9, "kernel": kernel}))


if __name__ == "__main__":
    main()
