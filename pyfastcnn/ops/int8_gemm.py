"""pyfastcnn.int8_gemm: int8 x int8 -> int32 matrix product (the semantics of torch._int_mm)."""

from __future__ import annotations

from typing import Union

import torch

from .. import _native
from . import cuda_int8
from ._checks import check_tensor
from .quantized import PackedInt8Weight, _int8_gemm_packed, _int8_gemm_packed_impl


def _int8_gemm_impl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # The kernel wants unit inner stride; other views are copied once here.
    a = a.contiguous()
    b = b.contiguous()
    out = torch.empty((a.shape[0], b.shape[1]), dtype=torch.int32)
    _native.C.int8_gemm(_native.tensor_arg(a), _native.tensor_arg(b), _native.tensor_arg(out))
    return out


_int8_gemm = torch.library.custom_op("pyfastcnn::int8_gemm", mutates_args=(), device_types="cpu")(
    _int8_gemm_impl
)


@_int8_gemm.register_fake
def _(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a.new_empty((a.shape[0], b.shape[1]), dtype=torch.int32)


_int8_gemm.register_kernel("cuda")(cuda_int8.int8_gemm_impl)


def int8_gemm(a: torch.Tensor, b: Union[torch.Tensor, PackedInt8Weight]) -> torch.Tensor:
    """Exact integer matrix product ``a.int() @ b.int()``.

    Args:
        a: int8 [M, K], CPU or CUDA, any strides.
        b: int8 [K, N] on a's device, any strides; or a ``PackedInt8Weight`` from
            ``pack_int8_weight(b)``: packed once (and uploaded once per CUDA device), the fast
            path for a constant operand.

    Returns:
        int32 [M, N]. Sums wrap modulo 2^32 like ``torch._int_mm`` (only possible for
        K > 131072 with extreme values).
    """
    # CUDA tensors are accepted; any other device is refused as "not a CPU tensor" (the
    # message the CPU-only op gave, which tests/test_int8_gemm.py pins).
    on_cuda = isinstance(a, torch.Tensor) and a.is_cuda
    check_tensor("a", a, torch.int8, 2, devices=("cuda",) if on_cuda else ("cpu",))
    if isinstance(b, PackedInt8Weight):
        if b.groups != 1 or a.shape[1] != b.K:
            raise ValueError(
                f"a and b do not chain: a is {tuple(a.shape)}, b is packed "
                f"[{b.K}, {b.N}] (groups={b.groups})"
            )
        if a.shape[0] == 0:
            return torch.empty((0, b.N), dtype=torch.int32, device=a.device)
        if a.is_cuda:
            isa, data, col_sums = b.cuda_operand(a.device)
            return _native.run(_int8_gemm_packed, cuda_int8.int8_gemm_packed_impl, a, data[0],
                               col_sums, isa, b.N)
        isa, data, col_sums = b.packed()
        return _native.run(
            _int8_gemm_packed, _int8_gemm_packed_impl, a.contiguous(), data, col_sums, isa, b.N
        )
    check_tensor("b", b, torch.int8, 2, devices=("cpu", "cuda"))
    cuda_int8.same_device("a", a, b=b)
    if a.shape[1] != b.shape[0]:
        raise ValueError(
            f"a and b do not chain: a is {tuple(a.shape)}, b is {tuple(b.shape)} "
            f"(b must have K={a.shape[1]} rows)"
        )
    impl = cuda_int8.int8_gemm_impl if a.is_cuda else _int8_gemm_impl
    return _native.run(_int8_gemm, impl, a, b)
