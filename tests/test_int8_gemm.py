import pytest
import torch

import pyfastcnn
from pyfastcnn import _native
from pyfastcnn.ops import reference

SHAPES = [  # (M, N, K): vector tails in every dimension, 1s, K not a multiple of 2 or 4
    (1, 1, 1),
    (1, 7, 13),
    (3, 5, 1),
    (7, 13, 5),
    (6, 32, 4),
    (5, 33, 3),
    (13, 1, 4001),
    (33, 17, 4001),
    (17, 31, 63),
    (64, 64, 64),
    (100, 48, 3),
    (257, 129, 34),
]


def rand_int8(*shape):
    return torch.randint(-128, 128, shape, dtype=torch.int8)


@pytest.mark.parametrize("m,n,k", SHAPES, ids=lambda v: str(v))
def test_matches_reference(isa, m, n, k):
    a, b = rand_int8(m, k), rand_int8(k, n)
    out = pyfastcnn.int8_gemm(a, b)
    assert out.dtype == torch.int32 and out.shape == (m, n)
    assert torch.equal(out, reference.int8_gemm(a, b))


@pytest.mark.parametrize(
    "fill", [(-128, -128), (-128, 127), (127, 127), (127, -128)], ids=lambda f: f"a={f[0]},b={f[1]}"
)
def test_extreme_values_are_exact(isa, fill):
    a = torch.full((7, 37), fill[0], dtype=torch.int8)
    b = torch.full((37, 19), fill[1], dtype=torch.int8)
    assert torch.equal(
        pyfastcnn.int8_gemm(a, b), torch.full((7, 19), fill[0] * fill[1] * 37, dtype=torch.int32)
    )


def test_matches_torch_int_mm(isa):
    a, b = rand_int8(32, 64), rand_int8(64, 48)
    assert torch.equal(pyfastcnn.int8_gemm(a, b), torch._int_mm(a, b))


def test_int32_overflow_wraps_like_reference(isa):
    k = 140_000  # 128 * 128 * k > 2^31: the true sum does not fit int32
    a = torch.full((2, k), -128, dtype=torch.int8)
    b = torch.full((k, 3), -128, dtype=torch.int8)
    b[::7] = 127
    assert torch.equal(pyfastcnn.int8_gemm(a, b), reference.int8_gemm(a, b))


def test_non_contiguous_inputs(isa):
    a = rand_int8(40, 30).t()  # [30, 40], column-major
    b = rand_int8(40, 50)[:, ::2]  # [40, 25], strided columns
    assert torch.equal(pyfastcnn.int8_gemm(a, b), reference.int8_gemm(a, b))


def test_thread_counts_agree():
    a, b = rand_int8(67, 300), rand_int8(300, 45)
    previous = pyfastcnn.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            pyfastcnn.set_num_threads(threads)
            results.append(pyfastcnn.int8_gemm(a, b))
    finally:
        pyfastcnn.set_num_threads(previous)
    assert all(torch.equal(r, results[0]) for r in results)


def test_empty_dims():
    assert pyfastcnn.int8_gemm(rand_int8(0, 5), rand_int8(5, 3)).shape == (0, 3)
    assert pyfastcnn.int8_gemm(rand_int8(4, 5), rand_int8(5, 0)).shape == (4, 0)
    assert torch.equal(
        pyfastcnn.int8_gemm(rand_int8(4, 0), rand_int8(0, 3)), torch.zeros(4, 3, dtype=torch.int32)
    )


BAD_INPUTS = [
    ("a-float", lambda: (torch.randn(3, 4), rand_int8(4, 5)), TypeError, "a must have dtype"),
    (
        "b-uint8",
        lambda: (rand_int8(3, 4), torch.zeros(4, 5, dtype=torch.uint8)),
        TypeError,
        "b must have dtype",
    ),
    ("a-not-tensor", lambda: ([[1]], rand_int8(1, 1)), TypeError, "a must be a torch.Tensor"),
    ("a-3d", lambda: (rand_int8(2, 3, 4), rand_int8(4, 5)), ValueError, "a must be 2-D"),
    ("b-1d", lambda: (rand_int8(3, 4), rand_int8(4)), ValueError, "b must be 2-D"),
    ("k-mismatch", lambda: (rand_int8(3, 4), rand_int8(5, 6)), ValueError, "K=4"),
    (
        "a-meta",
        lambda: (torch.empty(3, 4, dtype=torch.int8, device="meta"), rand_int8(4, 5)),
        ValueError,
        "a must be a CPU tensor",
    ),
]


@pytest.mark.parametrize(
    "make,error,match", [b[1:] for b in BAD_INPUTS], ids=[b[0] for b in BAD_INPUTS]
)
def test_bad_input(make, error, match):
    with pytest.raises(error, match=match):
        pyfastcnn.int8_gemm(*make())


def test_native_rechecks_shapes():
    """The C++ entry point refuses inconsistent arguments whatever Python passed."""
    a, b = rand_int8(3, 4), rand_int8(5, 6)
    out = torch.empty(3, 6, dtype=torch.int32)
    with pytest.raises(ValueError, match="b must have 4 rows"):
        _native.C.int8_gemm(_native.tensor_arg(a), _native.tensor_arg(b), _native.tensor_arg(out))
    with pytest.raises(ValueError, match="out must have shape"):
        _native.C.int8_gemm(
            _native.tensor_arg(a),
            _native.tensor_arg(rand_int8(4, 6)),
            _native.tensor_arg(torch.empty(2, 6, dtype=torch.int32)),
        )
    with pytest.raises(ValueError, match="a must be int8"):
        _native.C.int8_gemm(
            _native.tensor_arg(a.float()),
            _native.tensor_arg(rand_int8(4, 6)),
            _native.tensor_arg(out),
        )


def test_opcheck():
    torch.library.opcheck(torch.ops.pyfastcnn.int8_gemm.default, (rand_int8(5, 7), rand_int8(7, 3)))
