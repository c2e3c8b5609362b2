"""``pyfastcnn.compress``: one call from a float CNN to an optimized inference model."""
from __future__ import annotations

import copy
from typing import Iterable, Optional, Sequence

import torch

from . import fusion


def _fuse_sparse_relu(gm: torch.fx.GraphModule) -> None:
    """SparseConv2d → ReLU becomes SparseConv2d(relu=True) (the kernel's fused ReLU)."""
    from .nn.sparse import SparseConv2d

    for node in list(gm.graph.nodes):
        m = fusion.module_of(gm, node)
        if not isinstance(m, SparseConv2d) or m.relu or len(node.users) != 1:
            continue
        user = next(iter(node.users))
        if fusion.activation_of(gm, user) == "relu" and user.args[0] is node:
            m.relu = True
            user.replace_all_uses_with(node)
            gm.graph.erase_node(user)
    gm.recompile()


def compress(
    model: torch.nn.Module,
    *,
    sparsity: Optional[float] = None,
    structure: str = "unstructured",
    quantize: Optional[str] = None,
    calibration_data: Optional[Iterable] = None,
    fuse: bool = True,
    skip: Sequence[str] = (),
    observer: str = "mse",
) -> torch.nn.Module:
    """A compressed copy of ``model`` for inference (the input model is untouched), one-shot
    (no fine-tuning: for that use ``pyfastcnn.pruning`` and ``prepare_qat`` directly).

    Args:
        model: a float CNN traceable by torch.fx (ResNet, MobileNet, your own...).
        sparsity: prune this fraction of conv/linear weights (magnitude, per layer), e.g. 0.8;
            None: no pruning.
        structure: pruning structure: "unstructured", "block" (32 output channels sharing
            positions: the fastest sparse kernel), "2:4", ... (see ``pruning.prune``).
        quantize: None (FP32), "int8" (PTQ; needs ``calibration_data``), "bf16" (CPU, AVX-512
            BF16 kernels) or "fp16" (a half copy, for GPUs).
        calibration_data: iterable of input batches (or (input, target) pairs) for "int8".
        fuse: FP32/BF16: fold BN and fuse bias + ReLU into each conv's kernel (default).
        skip: layer names (or fnmatch patterns) left dense and, for int8, in float.
        observer: activation observer for "int8" (see ``quantization.QConfig``).

    FP32: each conv with zero weights (pruned here, or earlier with ``pyfastcnn.pruning`` and
    fine-tuned) runs the sparse kernel where the cost model predicts it faster
    (``pruning.convert``), the others the fused dense kernel.
    """
    from . import pruning, quantization

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if quantize not in (None, "int8", "bf16", "fp16"):
        raise ValueError(f"quantize must be None, 'int8', 'bf16' or 'fp16', got {quantize!r}")
    if quantize == "int8" and calibration_data is None:
        raise ValueError("quantize='int8' needs calibration_data (a few input batches)")
    model = copy.deepcopy(model).eval()
    if sparsity is not None or ":" in structure:  # N:M structures fix their own sparsity
        pruning.prune(model, sparsity, structure, skip=list(skip) or None)
        pruning.remove(model)
    if quantize == "int8":
        skipped = set(skip)
        prepared = quantization.prepare(
            model, quantization.QConfig(activation=observer),
            filter_fn=lambda name, m: name not in skipped)
        quantization.calibrate(prepared, calibration_data)
        return quantization.convert(prepared)
    if quantize == "fp16":
        return fusion.to_low_precision(model, torch.float16)
    if quantize == "bf16":
        return fusion.fuse(model, dtype=torch.bfloat16) if fuse else copy.deepcopy(model)
    # Pruned convs (here or before: a model pruned by pyfastcnn.pruning and fine-tuned) get
    # the sparse kernel where the cost model predicts a gain; the others stay dense.
    if not fuse:
        return pruning.convert(model, skip=list(skip))
    gm = fusion.fold_batchnorm(model, inplace=True)
    pruning.convert(gm, skip=list(skip))
    _fuse_sparse_relu(gm)
    return fusion.fuse(gm, inplace=True)
