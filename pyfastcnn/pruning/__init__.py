"""Pruning: make weights sparse (masks), schedule it during training, remove channels, and
convert pruned convs to pyfastcnn's sparse kernels.

    prune(model, sparsity, structure="unstructured"|"2:4"|"block", criterion="l1", ...)
    GradualPruner(model, CubicSchedule(0.9, begin_step, end_step, frequency=...), optimizer=)
    remove(model)                                # make masks permanent (zeros stay)
    prune_channels(model, sparsity, example_inputs)  # physically smaller dense model
    sensitivity_analysis(model, metric, sparsities) -> table; table.allocate(budget)
    convert(model)                               # Conv2d -> nn.SparseConv2d where faster
    sparsity_report(model, example_inputs)       # params, non-zeros, FLOPs, sizes

Everything works in place on ordinary ``torch.nn`` models and returns the model.
"""
from .channel import (
    ChannelGroup,
    ChannelPlan,
    ChannelPruningError,
    channel_plan,
    prune_channels,
)
from .convert import (
    ConversionDecision,
    conversion_plan,
    convert,
    converted_layers,
    estimate_speedup,
)
from .core import prune, select_layers
from .criteria import CRITERIA
from .masks import (
    apply_mask,
    finalize,
    get_mask,
    is_pruned,
    mask_optimizer,
    masks,
    reapply_masks,
    remove,
    restore_masks,
    zero_optimizer_state,
)
from .report import SparsityReport, sparsity_report
from .schedule import (
    CubicSchedule,
    GradualPruner,
    LinearSchedule,
    OneShotSchedule,
    Schedule,
)
from .sensitivity import SensitivityTable, sensitivity_analysis
from .structures import NM, Block, Structure, Unstructured

__all__ = [
    "prune", "remove", "finalize", "select_layers", "CRITERIA",
    "Structure", "Unstructured", "NM", "Block",
    "apply_mask", "get_mask", "masks", "is_pruned", "reapply_masks", "restore_masks",
    "mask_optimizer", "zero_optimizer_state",
    "Schedule", "CubicSchedule", "LinearSchedule", "OneShotSchedule", "GradualPruner",
    "prune_channels", "channel_plan", "ChannelPlan", "ChannelGroup", "ChannelPruningError",
    "sensitivity_analysis", "SensitivityTable",
    "convert", "conversion_plan", "converted_layers", "ConversionDecision", "estimate_speedup",
    "sparsity_report", "SparsityReport",
]
