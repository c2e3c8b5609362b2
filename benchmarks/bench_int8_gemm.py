"""INT8 GEMM: pyfastcnn.int8_gemm (packed weight, and unpacked) against torch._int_mm and FP32
torch.mm, same thread count, same run.

    pytest benchmarks/bench_int8_gemm.py --benchmark-json=benchmarks/results/cpu-int8-gemm.json
"""

import pytest
import torch
from conftest import QUICK, run
from shapes import GEMM_SKINNY, GEMM_SQUARE, RESNET50_LAYERS

import pyfastcnn
from pyfastcnn.ops import reference

SHAPES = (
    [(n, n, n) for n in GEMM_SQUARE]
    + GEMM_SKINNY
    + [layer.gemm_shape(batch) for layer in RESNET50_LAYERS[:6] for batch in (1, 8)]
)
if QUICK:
    SHAPES = [(512, 512, 512), (1, 1024, 1024), (784, 128, 1152)]

IMPLS = ("pyfastcnn packed", "pyfastcnn", "torch._int_mm", "torch.mm fp32")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "m{}-n{}-k{}".format(*s))
def test_int8_gemm(benchmark, threads, shape, impl):
    m, n, k = shape
    a = torch.randint(-128, 128, (m, k), dtype=torch.int8)
    b = torch.randint(-128, 128, (k, n), dtype=torch.int8)
    if impl == "pyfastcnn packed":
        packed = pyfastcnn.pack_int8_weight(b)  # once, outside the timing: the fast path

        def fn():
            return pyfastcnn.int8_gemm(a, packed)
    elif impl == "pyfastcnn":

        def fn():
            return pyfastcnn.int8_gemm(a, b)
    elif impl == "torch._int_mm":

        def fn():
            return torch._int_mm(a, b)
    else:
        af, bf = a.float(), b.float()

        def fn():
            return torch.mm(af, bf)

    if impl.startswith("pyfastcnn"):  # a benchmark that computes the wrong thing measures nothing
        assert torch.equal(fn(), reference.int8_gemm(a, b))
    run(
        benchmark,
        fn,
        group=f"int8_gemm m{m}-n{n}-k{k} t{threads}",
        impl=impl,
        ops=2 * m * n * k,
        threads=threads,
        baseline="torch._int_mm",
        kind="fp32" if impl == "torch.mm fp32" else "int8",
    )
