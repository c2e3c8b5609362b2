"""Benchmark shapes, in one place. Layer set from shared/PEAKS.md (ResNet-50)."""

from dataclasses import dataclass
from typing import List, Tuple


@dataclass(frozen=True)
class ConvLayer:
    c_in: int
    c_out: int
    hw: int
    k: int
    stride: int

    @property
    def padding(self) -> int:
        return self.k // 2

    @property
    def out_hw(self) -> int:
        return (self.hw + 2 * self.padding - self.k) // self.stride + 1

    def gemm_shape(self, batch: int) -> Tuple[int, int, int]:
        """(M, N, K) of the conv as a GEMM: M = N*OH*OW, N = C_out, K = C_in*k*k."""
        return (batch * self.out_hw**2, self.c_out, self.c_in * self.k * self.k)

    def flops(self, batch: int) -> int:
        return 2 * batch * self.c_out * self.out_hw**2 * self.c_in * self.k * self.k

    @property
    def id(self) -> str:
        return f"{self.c_in}-{self.c_out}-{self.hw}-k{self.k}s{self.stride}"


RESNET50_LAYERS: List[ConvLayer] = [
    ConvLayer(64, 64, 56, 3, 1),
    ConvLayer(128, 128, 28, 3, 1),
    ConvLayer(256, 256, 14, 3, 1),
    ConvLayer(512, 512, 7, 3, 1),
    ConvLayer(256, 64, 56, 1, 1),
    ConvLayer(1024, 256, 14, 1, 1),
    ConvLayer(3, 64, 224, 7, 2),
]
# MobileNetV2 depthwise 3x3 layers: (channels, input H = W, stride).
MOBILENETV2_DEPTHWISE: List[Tuple[int, int, int]] = [
    (32, 112, 1),
    (96, 112, 2),
    (144, 56, 1),
    (144, 56, 2),
    (192, 28, 1),
    (192, 28, 2),
    (384, 14, 1),
    (576, 14, 1),
    (576, 14, 2),
    (960, 7, 1),
]
BATCHES = (1, 8)

# Per-core peaks by CPU (vendor, family, has AVX-512), measured with benchmarks/peak_probe.c
# (Zen 3: the same kind of probe on ymm, 12 independent chains per instruction mix); report.py
# shows "% of peak" only for runs on a CPU listed here. Zen 5 issues two 512-bit VNNI / FMA operations per cycle, Zen 4 one
# (shared/PEAKS.md); vdpbf16ps does twice the FP32 FLOPs. Zen 3 shares family 25 with Zen 4 but
# has no AVX-512: its INT8 peak is vpmaddubsw + vpmaddwd + vpaddd (saturating on full-range
# bytes; the exact vpmaddwd + vpaddd that pyfastcnn uses tops out at ~154 GOP/s, 2026-12-07).
PEAKS_PER_CORE = {
    ("AuthenticAMD", 26, True): {"int8": 1050e9, "fp32": 267e9, "bf16": 534e9},  # Zen 5
    ("AuthenticAMD", 25, True): {"int8": 465e9, "fp32": 116e9, "bf16": 231e9},  # Zen 4
    ("AuthenticAMD", 25, False): {"int8": 192e9, "fp32": 101e9},  # Zen 3
}
THREADS = (1, 2)

GEMM_SQUARE = (256, 512, 1024, 2048)
GEMM_SKINNY = [(m, nk, nk) for m in (1, 4, 16, 64) for nk in (1024, 4096)]
