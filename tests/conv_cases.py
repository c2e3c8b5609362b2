"""Conv geometries shared by the conv op tests: odd sizes, every kind of geometry."""

from dataclasses import dataclass
from typing import Tuple, Union

import pytest
import torch


@dataclass(frozen=True)
class ConvCase:
    id: str
    n: int
    c: int
    h: int
    w: int
    oc: int
    k: Tuple[int, int]
    stride: Union[int, Tuple[int, int]] = 1
    padding: Union[int, Tuple[int, int], str] = 0
    dilation: Union[int, Tuple[int, int]] = 1
    groups: int = 1

    def input(self) -> torch.Tensor:
        return torch.randn(self.n, self.c, self.h, self.w)

    def weight(self) -> torch.Tensor:
        return torch.randn(self.oc, self.c // self.groups, *self.k)

    def kwargs(self) -> dict:
        return dict(
            stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups
        )


CASES = [
    ConvCase("tiny-1x1", 1, 1, 1, 1, 1, (1, 1)),
    ConvCase("1x1-c3-7x7", 1, 3, 7, 7, 5, (1, 1)),
    ConvCase("3x3-pad1-9x13", 2, 4, 9, 13, 6, (3, 3), padding=1),
    ConvCase("3x3-stride2", 1, 8, 17, 17, 16, (3, 3), stride=2, padding=1),
    ConvCase("3x3-stride2x1", 2, 5, 13, 11, 7, (3, 3), stride=(2, 1), padding=(1, 0)),
    ConvCase("3x3-dil2", 2, 3, 13, 11, 4, (3, 3), padding=2, dilation=2),
    ConvCase("1x5", 1, 5, 7, 33, 3, (1, 5), padding=(0, 2)),
    ConvCase("5x1", 1, 5, 33, 7, 3, (5, 1), padding=(2, 0)),
    ConvCase("5x5-pad2", 1, 3, 13, 13, 7, (5, 5), padding=2),
    ConvCase("7x7-stem", 1, 3, 33, 33, 8, (7, 7), stride=2, padding=3),
    ConvCase("groups4", 2, 8, 9, 9, 12, (3, 3), padding=1, groups=4),
    ConvCase("depthwise", 2, 16, 10, 7, 16, (3, 3), padding=1, groups=16),
    ConvCase("depthwise-c40-s2", 2, 40, 15, 13, 40, (3, 3), stride=2, padding=1, groups=40),
    ConvCase("depthwise-5x5-c24-dil2", 1, 24, 9, 9, 24, (5, 5), padding=4, dilation=2,
             groups=24),
    ConvCase("depthwise-multiplier2", 1, 8, 7, 7, 16, (3, 3), padding=1, groups=8),
    ConvCase("same-even-k4", 1, 3, 9, 8, 5, (4, 4), padding="same"),
    ConvCase("same-dil3", 1, 2, 11, 10, 3, (3, 2), padding="same", dilation=3),
    ConvCase("valid", 3, 4, 6, 9, 2, (3, 3), padding="valid"),
    ConvCase("kernel-gt-input-padded", 1, 2, 2, 2, 3, (3, 3), padding=1),
    ConvCase("pad-gt-kernel", 1, 2, 5, 5, 3, (3, 3), padding=4),
    ConvCase("c33-oc17-28x28", 4, 33, 28, 28, 17, (3, 3), padding=1),
    # Reductions longer than one k-block (512), with runs split across blocks.
    ConvCase("multiblock-c70", 2, 70, 9, 8, 40, (3, 3), padding=1),
    ConvCase("multiblock-groups2", 1, 600, 4, 5, 6, (3, 3), padding=1, groups=2),
]

conv_cases = pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)

LAYOUTS = ("nchw", "channels_last", "strided_view")


def to_layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values in another memory layout."""
    if layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if layout == "strided_view":
        # Every other element of a wider tensor: no dimension has a unit stride.
        wide = torch.empty(x.shape[0], x.shape[1], x.shape[2], 2 * x.shape[3])
        view = wide[:, :, :, ::2]
        view.copy_(x)
        return view
    return x.contiguous()


layouts = pytest.mark.parametrize("layout", LAYOUTS)
