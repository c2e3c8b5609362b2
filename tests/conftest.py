import random

import pytest
import torch

import pyfastcnn

SUPPORTED_ISAS = pyfastcnn.supported_isas()


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(params=SUPPORTED_ISAS, ids=lambda isa: f"isa={isa}")
def isa(request):
    """Runs the test once per ISA level this CPU supports, restoring the selection after."""
    previous = pyfastcnn.get_isa()
    pyfastcnn.set_isa(request.param)
    yield request.param
    pyfastcnn.set_isa(previous)


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float64."""
    ref = ref.double()
    denom = ref.norm().item()
    diff = (out.double() - ref).norm().item()
    return diff / denom if denom else diff
