"""The reference models: torchvision-identical parameter counts, output shapes."""
import pytest
import torch

from pyfastcnn import models


@pytest.mark.parametrize("factory,params", [
    (models.resnet18, 11_689_512), (models.resnet50, 25_557_032),
    (models.mobilenet_v2, 3_504_872)])
def test_parameter_count_matches_torchvision(factory, params):
    net = factory()
    assert sum(p.numel() for p in net.parameters()) == params


@pytest.mark.parametrize("factory", [models.resnet18, models.mobilenet_v2])
def test_imagenet_models_run(factory):
    net = factory(num_classes=7).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 3, 64, 64)).shape == (1, 7)


def test_cifar_resnet():
    net = models.cifar_resnet(20, num_classes=10).eval()
    assert sum(p.numel() for p in net.parameters()) == 272_474  # the paper's 0.27M
    with torch.no_grad():
        assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="depth"):
        models.cifar_resnet(21)
