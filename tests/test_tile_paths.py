"""INT8 GEMM/conv and BF16 conv shapes chosen for the paths of the AMX tile kernels
(csrc/cpu/avx512/amx_tiles.h, *_avx512amx.cc), run at every ISA level: rows loaded straight
from the input or gathered (rows crossing an output row, rows 2 KB apart, int8 rows flipped on
the way), tiles cut by output row with rows past the live ones read and dropped (also at the
end of the input, where they must be gathered instead), K in one or several even passes of at
most 640 bytes, one or two A tiles, several panel groups, tails everywhere."""

import pytest
import torch
from conftest import rel_error

import pyfastcnn
from pyfastcnn.ops import reference

GEMMS = [  # (M, N, K)
    (16, 32, 64),      # one A tile, one panel, one k-step
    (20, 33, 100),     # one A tile + tail rows, K tail (gathered)
    (48, 70, 640),     # rows 640 B apart: direct loads, one pass over K
    (48, 70, 704),     # two passes over K: 384 + 320 bytes
    (40, 300, 1024),   # rows 1 KB apart (read in place), two panel groups
    (33, 40, 2048),    # rows 2 KB apart (gathered), four passes over K
    (65, 17, 1600),    # partial last pass, N < one tile
    (15, 64, 128),     # below one tile of rows (VNNI kernel on AMX)
]


@pytest.mark.parametrize("m,n,k", GEMMS, ids=str)
def test_gemm_paths_are_exact(isa, m, n, k):
    a = torch.randint(-128, 128, (m, k), dtype=torch.int8)
    b = torch.randint(-128, 128, (k, n), dtype=torch.int8)
    expected = reference.int8_gemm(a, b)
    assert torch.equal(pyfastcnn.int8_gemm(a, b), expected)
    assert torch.equal(pyfastcnn.int8_gemm(a, pyfastcnn.pack_int8_weight(b)), expected)


CONVS = [  # (N, C, H, W, OC, k, stride, padding, groups)
    (2, 64, 20, 20, 80, 3, 1, 1, 1),    # 20-wide rows: direct tiles and tiles across rows
    (1, 128, 9, 9, 300, 3, 1, 1, 1),    # K = 1152: two passes of 576; two panel groups
    (3, 128, 6, 7, 40, 1, 1, 0, 1),     # 1x1: rows contiguous across output rows
    (1, 64, 15, 15, 33, 3, 2, 1, 1),    # stride 2
    (1, 128, 8, 8, 48, 3, 1, 1, 2),     # groups: 64-channel runs per tap
    (2, 96, 7, 7, 64, 3, 1, 1, 1),      # 288-byte runs (gathered), 7x7 map
    (1, 48, 5, 37, 20, 1, 1, 0, 1),     # 48-byte runs: the VNNI kernel on AMX
    (2, 3, 33, 33, 40, 7, 2, 3, 1),     # 7x7 stem: 3 image rows per pixel, 3 chunks on AMX
    (1, 3, 9, 12, 20, 3, 1, 1, 1),      # 3x3 over 3 channels: too little to stack
    (1, 5, 10, 10, 16, 5, 1, 2, 1),     # 5x5 over 5 channels: 2 rows per chunk, 3 chunks
    (1, 4, 15, 16, 24, 7, 1, 3, 1),     # 4 channels (no channel padding): 2 rows, 4 chunks
    (2, 1, 14, 15, 8, 11, 1, 5, 1),     # 1 channel: 5 rows per pixel (5-byte pixels)
    (1, 2, 20, 19, 8, 16, 1, 0, 1),     # 2 channels, 16x16 kernel: 2 rows per pixel
    (2, 64, 14, 14, 40, 3, 1, 1, 1),    # tiles by output row: 14 live rows of 16
    (1, 128, 28, 28, 64, 1, 1, 0, 1),   # by output row, pieces of 16 + 12
    (1, 64, 28, 28, 32, 3, 2, 1, 1),    # by output row, stride 2 (OW = 14)
]


@pytest.mark.parametrize("n,c,h,w,oc,k,stride,padding,groups", CONVS, ids=str)
@pytest.mark.parametrize("x_dtype", [torch.uint8, torch.int8], ids=["u8", "s8"])
def test_conv_paths_match_reference(isa, n, c, h, w, oc, k, stride, padding, groups, x_dtype):
    lo, hi, zp = (0, 256, 131) if x_dtype == torch.uint8 else (-128, 128, -7)
    x = torch.randint(lo, hi, (n, c, h, w), dtype=x_dtype).contiguous(
        memory_format=torch.channels_last)
    qw = pyfastcnn.quantize_weight(torch.randn(oc, c // groups, k, k), groups=groups)
    bias = torch.randn(oc)
    geo = dict(stride=stride, padding=padding, groups=groups)
    y = pyfastcnn.quantized_conv2d(x, 0.02, zp, qw, bias, **geo)
    ref = reference.quantized_conv2d(x, 0.02, zp, qw.int_weight, qw.scale, bias,
                                     stride=(stride, stride), padding=(padding, padding),
                                     dilation=(1, 1), groups=groups)
    assert rel_error(y, ref) <= 1e-5
    codes = pyfastcnn.quantized_conv2d(x, 0.02, zp, qw, bias, **geo, out_dtype=torch.uint8,
                                       out_scale=0.05, out_zero_point=128, relu=True)
    ref_codes = torch.clamp(torch.round(torch.relu(ref) / 0.05) + 128, 0, 255)
    assert (codes.double() - ref_codes).abs().max().item() <= 1


BF16_CONVS = [  # (N, C, H, W, OC, k, stride, padding, groups)
    (2, 64, 14, 14, 40, 3, 1, 1, 1),    # by output row, read in place
    (1, 64, 20, 20, 72, 3, 1, 1, 1),    # flat tiles, some across output rows (gathered)
    (2, 32, 7, 7, 48, 3, 1, 1, 1),      # 192-byte runs, 7x7 map
    (1, 128, 28, 28, 64, 1, 1, 0, 1),   # 1x1, 16 + 12 pieces per row, two passes over K
    (1, 128, 15, 15, 24, 3, 2, 1, 2),   # groups, per-tap runs, stride 2
    (1, 24, 9, 9, 16, 3, 1, 1, 1),      # K = 216, not a multiple of 32: padded panels
    (2, 3, 33, 33, 40, 7, 2, 3, 1),     # 7x7 stem: 28-element runs, padded panels
    (1, 16, 9, 9, 8, 3, 1, 1, 4),       # groups of 4 channels: per-tap runs of 4
]


@pytest.mark.parametrize("n,c,h,w,oc,k,stride,padding,groups", BF16_CONVS, ids=str)
def test_bf16_conv_paths(isa, n, c, h, w, oc, k, stride, padding, groups):
    """Error against float64 no worse than twice PyTorch's own bfloat16 conv on the same values
    (as test_fused_module's BF16 test)."""
    x = torch.randn(n, c, h, w)
    weight, bias = torch.randn(oc, c // groups, k, k) * 0.1, torch.randn(oc)
    fused = pyfastcnn.nn.FusedConvBNReLU2d(weight, bias, stride, padding, 1, groups, relu=True,
                                           dtype=torch.bfloat16)
    xb, wb = x.bfloat16(), weight.bfloat16()
    ref = torch.relu(torch.nn.functional.conv2d(xb.double(), wb.double(), bias.double(),
                                                stride, padding, 1, groups))
    torch_bf16 = torch.relu(torch.nn.functional.conv2d(xb, wb, bias.bfloat16(), stride,
                                                       padding, 1, groups))
    ours = fused(x)
    assert rel_error(ours, ref) <= 2 * rel_error(torch_bf16, ref) + 1e-6
