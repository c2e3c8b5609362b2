"""INT8 GEMM: pyfastcnn.int8_gemm against torch._int_mm (oneDNN/FBGEMM) and FP32 torch.mm.

Run: pytest benchmarks/bench_int8_gemm.py --benchmark-json=benchmarks/results/cpu.json
"""

import pytest
import torch
from conftest import QUICK, run
from shapes import GEMM_SKINNY, GEMM_SQUARE

import pyfastcnn
from pyfastcnn.ops import reference

SHAPES = [(n, n, n) for n in GEMM_SQUARE] + GEMM_SKINNY
if QUICK:
    SHAPES = [(512, 512, 512), (1, 1024, 1024)]

IMPLS = {
    "pyfastcnn": lambda a, b, af, bf: pyfastcnn.int8_gemm(a, b),
    "torch._int_mm": lambda a, b, af, bf: torch._int_mm(a, b),
    "torch.mm fp32": lambda a, b, af, bf: torch.mm(af, bf),
}


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "m{}-n{}-k{}".format(*s))
def test_int8_gemm(benchmark, threads, shape, impl):
    m, n, k = shape
    a = torch.randint(-128, 128, (m, k), dtype=torch.int8)
    b = torch.randint(-128, 128, (k, n), dtype=torch.int8)
    af, bf = a.float(), b.float()
    fn = IMPLS[impl]
    if impl == "pyfastcnn":  # a benchmark that computes the wrong thing measures nothing
        assert torch.equal(fn(a, b, af, bf), reference.int8_gemm(a, b))
    run(
        benchmark,
        lambda: fn(a, b, af, bf),
        group=f"int8_gemm m{m}-n{n}-k{k} t{threads}",
        impl=impl,
        ops=2 * m * n * k,
        threads=threads,
        baseline="torch._int_mm",
    )
