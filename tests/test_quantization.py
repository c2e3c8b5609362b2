"""Quantization math and observers against float64 / NumPy implementations of the formulas."""
import numpy as np
import pytest
import torch

from pyfastcnn.quantization import (
    HistogramObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    calibrate,
    choose_qparams,
    dequantize,
    quant_range,
    quantize,
)


def test_quant_range():
    assert quant_range(torch.uint8) == (0, 255)
    assert quant_range(torch.int8) == (-128, 127)
    assert quant_range(torch.int8, bits=4) == (-8, 7)
    assert quant_range(torch.uint8, bits=4) == (0, 15)
    with pytest.raises(TypeError, match="dtype"):
        quant_range(torch.int32)
    with pytest.raises(ValueError, match="bits"):
        quant_range(torch.uint8, bits=9)


@pytest.mark.parametrize("lo,hi", [(-1.0, 3.0), (0.5, 2.0), (-4.0, -1.0), (-2.5, 2.5)])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8])
def test_asymmetric_qparams_match_formula_and_represent_zero(lo, hi, dtype):
    qmin, qmax = quant_range(dtype)
    scale, zp = choose_qparams(torch.tensor(lo), torch.tensor(hi), dtype)
    lo0, hi0 = min(lo, 0.0), max(hi, 0.0)
    ref_scale = (hi0 - lo0) / (qmax - qmin)
    ref_zp = int(np.clip(qmin - np.round(lo0 / ref_scale), qmin, qmax))
    assert float(scale) == pytest.approx(ref_scale, rel=1e-6) and int(zp) == ref_zp
    zero = quantize(torch.zeros(1), scale, zp, dtype)
    assert float(dequantize(zero, scale, zp)) == 0.0


@pytest.mark.parametrize("dtype,mid", [(torch.int8, 0), (torch.uint8, 128)])
def test_symmetric_qparams(dtype, mid):
    scale, zp = choose_qparams(torch.tensor([-3.0, -1.0]), torch.tensor([1.0, 2.0]), dtype,
                               symmetric=True)
    assert torch.allclose(scale, torch.tensor([3.0, 2.0]) / 127.5)
    assert torch.equal(zp, torch.tensor([mid, mid], dtype=torch.int32))


def test_constant_tensors():
    scale, zp = choose_qparams(torch.tensor(3.0), torch.tensor(3.0))
    assert float(scale) == pytest.approx(3.0 / 255) and int(zp) == 0
    scale, zp = choose_qparams(torch.tensor(0.0), torch.tensor(0.0))
    assert float(scale) > 0 and int(zp) == 0
    assert torch.equal(quantize(torch.zeros(5), scale, zp), torch.zeros(5, dtype=torch.uint8))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8])
def test_quantize_dequantize_match_numpy(dtype):
    x = torch.randn(1000) * 3
    x[:4] = torch.tensor([0.5, 1.5, -0.5, 100.0])  # ties round to even; clamping
    scale, zp = torch.tensor(1.0), torch.tensor(3 if dtype == torch.uint8 else -2)
    qmin, qmax = quant_range(dtype)
    ref = np.clip(np.round(x.double().numpy() / 1.0) + int(zp), qmin, qmax)
    q = quantize(x, scale, zp, dtype)
    assert q.dtype == dtype and np.array_equal(q.numpy().astype(np.float64), ref)
    assert np.allclose(dequantize(q, scale, zp).numpy(), (ref - int(zp)) * 1.0)


def test_per_channel_axis():
    w = torch.randn(4, 3, 2, 2)
    obs = calibrate(MinMaxObserver(dtype=torch.int8, symmetric=True, axis=0), [w])
    scale, zp = obs.qparams()
    assert scale.shape == (4,)
    ref = w.abs().reshape(4, -1).amax(1) / 127.5
    assert torch.allclose(scale, ref)
    q = quantize(w, scale, zp, torch.int8, axis=0)
    err = (dequantize(q, scale, zp, axis=0) - w).abs()
    assert (err <= scale.view(-1, 1, 1, 1) / 2 + 1e-6).all()


def test_minmax_and_moving_average_observers():
    batches = [torch.randn(50) * s for s in (1.0, 3.0, 0.5)]
    mm = calibrate(MinMaxObserver(), batches)
    allx = torch.cat(batches)
    assert mm.range()[0] == allx.min() and mm.range()[1] == allx.max()
    ema = calibrate(MovingAverageMinMaxObserver(averaging_constant=0.5), batches)
    lo, hi = float(batches[0].min()), float(batches[0].max())
    for b in batches[1:]:
        lo += 0.5 * (float(b.min()) - lo)
        hi += 0.5 * (float(b.max()) - hi)
    assert float(ema.range()[0]) == pytest.approx(lo) and float(ema.range()[1]) == pytest.approx(hi)
    # DataLoader-style (input, target) tuples are accepted.
    assert calibrate(MinMaxObserver(), [(allx, None)]).range()[1] == allx.max()


def test_histogram_minmax_and_percentile_match_numpy():
    x = torch.randn(20000, dtype=torch.float64) * 2
    width = float(x.max() - x.min()) / 2048
    obs = calibrate(HistogramObserver("minmax"), [x[:10000], x[10000:] * 1.5])  # re-binned
    data = torch.cat([x[:10000], x[10000:] * 1.5])
    lo, hi = obs.range()
    assert float(lo) == pytest.approx(float(data.min()), abs=1e-5)
    assert float(hi) == pytest.approx(float(data.max()), abs=1e-5)
    p = calibrate(HistogramObserver("percentile", percentile=99.0), [x])
    lo, hi = p.range()
    assert float(hi) == pytest.approx(np.percentile(x.numpy(), 99.0), abs=2 * width)
    assert float(lo) == pytest.approx(np.percentile(x.numpy(), 1.0), abs=2 * width)


def test_histogram_counts_match_a_float64_reference():
    """Bin counts (computed in the data's float type) against torch.histogram in float64, for
    non-contiguous channels_last input, values on the range's ends, and ranges too small or
    too large for float32 arithmetic (those fall back to float64)."""
    x = torch.randn(3, 5, 7, 9).contiguous(memory_format=torch.channels_last)
    x[0, 0, 0, 0], x[0, 0, 0, 1] = -4.0, 3.0  # the ends: min -> bin 0, max -> the last bin
    for data in (x, x.transpose(1, 3), torch.tensor([0.0, 1e-40, 5e-41]),
                 torch.tensor([-3e38, 0.0, 3e38])):
        obs = HistogramObserver(bins=64)
        obs(data)
        lo, hi = float(obs.min_val), float(obs.max_val)
        ref, _ = torch.histogram(data.double().flatten(), bins=64, range=(lo, hi))
        # float32 rounding may move a value that sits within ~1e-6 of an edge to the next bin
        assert obs.histogram.sum() == data.numel()
        assert (obs.histogram - ref).abs().sum() <= 2
        assert obs.histogram[0] >= 1 and obs.histogram[-1] >= 1


def _quant_mse(x, lo, hi):
    scale, zp = choose_qparams(lo, hi)
    return float(((dequantize(quantize(x, scale, zp), scale, zp) - x) ** 2).mean())


def test_mse_and_entropy_clip_outliers():
    torch.manual_seed(1)
    x = torch.distributions.Laplace(0.0, 1.0).sample((50000,))
    x[:5] = torch.tensor([60.0, -55.0, 40.0, 45.0, -50.0])  # rare outliers
    minmax = calibrate(HistogramObserver("minmax"), [x]).range()
    mse = calibrate(HistogramObserver("mse"), [x]).range()
    entropy = calibrate(HistogramObserver("entropy"), [x]).range()
    # MSE: the chosen range really quantizes the data with less squared error.
    assert float(mse[1]) < float(minmax[1])
    assert _quant_mse(x, *mse) < _quant_mse(x, *minmax)
    # Entropy (KL) clips far harder, as TensorRT's calibrator does: the outliers go, the bulk
    # (99.9% of |x|) stays, and the inliers get a much finer step.
    bulk = float(torch.quantile(x.abs()[5:], 0.999))
    assert bulk < float(entropy[1]) < 0.5 * float(minmax[1])
    inliers = x[5:]
    assert _quant_mse(inliers, *entropy) < _quant_mse(inliers, *minmax) / 4


def test_observer_errors():
    with pytest.raises(RuntimeError, match="seen no data"):
        MinMaxObserver().qparams()
    with pytest.raises(RuntimeError, match="seen no data"):
        HistogramObserver().qparams()
    with pytest.raises(ValueError, match="method must be"):
        HistogramObserver("kl")
    with pytest.raises(ValueError, match="averaging_constant"):
        MovingAverageMinMaxObserver(averaging_constant=0.0)
