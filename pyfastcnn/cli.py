"""The pyfastcnn command line (`pyfastcnn ...` or `python -m pyfastcnn ...`).

    pyfastcnn demo [--quick] [--out DIR]
    pyfastcnn compress --model FILE|NAME [--sparsity S] [--structure block] [--quantize int8]
                       (--calib-data DIR|FILE.pt | --calib-random) --out FILE
    pyfastcnn bench --model NAME|FILE [--batch 1,8] [--threads 1,2] [--sparsity S] [--quantize]
                    [--no-runtimes]
    pyfastcnn report --model FILE|NAME [--input-size 3,224,224]
    pyfastcnn config [--isa LEVEL]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional


class CliError(Exception):
    """A user error: printed as one line, exit code 2."""


def _config(args: argparse.Namespace) -> int:
    import pyfastcnn

    if args.isa:
        pyfastcnn.set_isa(args.isa)
    pyfastcnn.show_config()
    return 0 if pyfastcnn.config()["native"] else 1


def _int_list(text: str) -> List[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _load_model(spec: str):
    """A pyfastcnn.models name (random weights) or a file saved with torch.save(model)."""
    import torch

    from . import models

    factories = {"resnet18": models.resnet18, "resnet50": models.resnet50,
                 "mobilenet_v2": models.mobilenet_v2,
                 "cifar_resnet20": lambda: models.cifar_resnet(20)}
    if spec in factories:
        return factories[spec]().eval(), (3, 32, 32) if spec.startswith("cifar") else (3, 224, 224)
    path = Path(spec)
    if not path.is_file():
        raise CliError(f"--model: {spec!r} is neither a file nor one of {sorted(factories)}")
    try:
        model = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # corrupt or foreign files raise many kinds
        raise CliError(f"--model: cannot load {spec}: {type(err).__name__}: {err}") from None
    if not isinstance(model, torch.nn.Module):
        raise CliError(f"--model: {spec} holds a {type(model).__name__}, not a saved "
                       "torch.nn.Module (save the model itself: torch.save(model, path))")
    return model.eval(), None


def _input_size(args, default) -> tuple:
    size = tuple(args.input_size) if args.input_size else default
    if size is None:
        raise CliError("--input-size is required for a model file (e.g. --input-size 3,224,224)")
    if len(size) != 3:
        raise CliError(f"--input-size must be C,H,W, got {','.join(map(str, size))}")
    return size


def _float_list(text: str) -> List[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}") from None


def _calibration(args, size) -> list:
    import torch

    if args.calib_random:
        g = torch.Generator().manual_seed(0)
        return [torch.randn(8, *size, generator=g) for _ in range(4)]
    if args.calib_samples < 1:
        raise CliError(f"--calib-samples must be at least 1, got {args.calib_samples}")
    if not args.calib_data:
        raise CliError("--quantize int8 needs --calib-data DIR (a folder of images) or FILE.pt "
                       "(a tensor [N, C, H, W]), or --calib-random (speed-only runs)")
    path = Path(args.calib_data)
    if path.is_dir():
        from .data import load_image_folder

        try:
            return load_image_folder(path, size, limit=args.calib_samples, mean=args.mean,
                                     std=args.std)
        except (ValueError, ImportError) as err:
            raise CliError(f"--calib-data: {err}") from None
    if not path.is_file():
        raise CliError(f"--calib-data: no such file or folder: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CliError(f"--calib-data: cannot load {path}: {err}") from None
    if not isinstance(data, torch.Tensor) or data.dim() != 4 or not data.is_floating_point():
        raise CliError("--calib-data must be a folder of images or a file holding a float "
                       "tensor [N, C, H, W]")
    if tuple(data.shape[1:]) != tuple(size):
        raise CliError(f"--calib-data holds images of shape {tuple(data.shape[1:])}, the model "
                       f"takes {tuple(size)} (--input-size)")
    data = data[:args.calib_samples]
    return [data[i:i + 32].float() for i in range(0, len(data), 32)]


def _compress_model(args, model, size):
    from .compress import compress

    calib = _calibration(args, size) if args.quantize == "int8" else None
    return compress(model, sparsity=args.sparsity, structure=args.structure,
                    quantize=args.quantize, calibration_data=calib)


def _compress(args: argparse.Namespace) -> int:
    import torch

    model, default = _load_model(args.model)
    size = _input_size(args, default)
    out = _compress_model(args, model, size)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, args.out)
    print(f"wrote {args.out}")
    return 0


def _report(args: argparse.Namespace) -> int:
    import torch

    from .model_report import report

    model, default = _load_model(args.model)
    size = _input_size(args, default)
    x = torch.randn(args.batch, *size).contiguous(memory_format=torch.channels_last)
    print(report(model, x, runs=args.runs))
    return 0


def _runtime_variants(model, size):
    """ONNX Runtime and OpenVINO running `model` exported to ONNX (QDQ for INT8), when they are
    installed: (name, make(threads) -> run(x)) pairs, and notes on what was left out."""
    import os
    import tempfile

    import numpy as np

    from .export import export_onnx

    variants, notes = [], []
    try:
        import onnxruntime
    except ImportError:
        onnxruntime = None
        notes.append("onnxruntime not installed")
    try:
        import openvino
    except ImportError:
        openvino = None
        notes.append("openvino not installed")
    if onnxruntime is None and openvino is None:
        return variants, notes
    import torch

    path = os.path.join(tempfile.mkdtemp(prefix="pyfastcnn-bench-"), "model.onnx")
    try:
        export_onnx(model, torch.randn(1, *size), path)
    except Exception as err:  # a model with no ONNX mapping: bench the rest
        notes.append(f"ONNX export failed, no ONNX Runtime/OpenVINO rows: {err}")
        return variants, notes

    def feed(x):
        return np.ascontiguousarray(x.contiguous().numpy())

    if onnxruntime is not None:
        def make_ort(threads):
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
            session = onnxruntime.InferenceSession(path, options,
                                                   providers=["CPUExecutionProvider"])
            name = session.get_inputs()[0].name
            return lambda x: session.run(None, {name: feed(x)})
        variants.append(("onnxruntime (same model)", make_ort))
    if openvino is not None:
        def make_ov(threads):
            compiled = openvino.Core().compile_model(path, "CPU", {
                "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1,
                "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"})
            request = compiled.create_infer_request()
            return lambda x: request.infer({0: feed(x)})
        variants.append(("openvino (same model)", make_ov))
    return variants, notes


def _bench(args: argparse.Namespace) -> int:
    import copy
    import time
    import warnings

    import torch

    import pyfastcnn

    model, default = _load_model(args.model)
    size = _input_size(args, default)
    compressed = _compress_model(args, model, size) if (args.sparsity or args.quantize) else \
        pyfastcnn.compress(model)

    def torch_variant(net):
        def make(threads):
            def call(x):
                with torch.no_grad():
                    return net(x)
            return call
        return make

    variants = [("torch fp32 (channels_last)",
                 torch_variant(copy.deepcopy(model).to(memory_format=torch.channels_last))),
                ("pyfastcnn", torch_variant(compressed))]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torch.ao.quantization import get_default_qconfig_mapping
            from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

            example = torch.randn(1, *size)
            prepared = prepare_fx(copy.deepcopy(model), get_default_qconfig_mapping("x86"),
                                  (example,))
            with torch.no_grad():
                prepared(torch.randn(4, *size))
            variants.append(("torch int8 x86", torch_variant(convert_fx(prepared))))
    except Exception as err:  # the deprecated torch.ao path may be missing
        print(f"(torch int8 x86 not available: {err})")
    if not args.no_runtimes:
        runtimes, notes = _runtime_variants(compressed, size)
        variants += runtimes
        for note in notes:
            print(f"({note})")
    names = [name for name, _ in variants]
    print(f"| batch | threads | {' | '.join(names)} | pyfastcnn speed-up vs torch fp32 |")
    print("|---|---|" + "---|" * (len(variants) + 1))
    for threads in args.threads:
        torch.set_num_threads(threads)
        pyfastcnn.set_num_threads(threads)
        runners = [make(threads) for _, make in variants]
        for batch in args.batch:
            x = torch.randn(batch, *size).contiguous(memory_format=torch.channels_last)
            times = [[] for _ in runners]
            for run in runners:
                for _ in range(2):
                    run(x)
            for _ in range(args.runs):  # the variants take turns: a noisy moment hits all
                for i, run in enumerate(runners):
                    t0 = time.perf_counter()
                    run(x)
                    times[i].append(time.perf_counter() - t0)
            medians = [sorted(t)[len(t) // 2] * 1e3 for t in times]
            cells = " | ".join(f"{m:.2f} ms" for m in medians)
            print(f"| {batch} | {threads} | {cells} | {medians[0] / medians[1]:.2f}× |")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from . import demo

    settings = demo.DemoSettings.quick() if args.quick else demo.DemoSettings()
    demo.run(args.out, settings, progress=not args.no_progress)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyfastcnn", description="CNN compression and acceleration toolkit."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    config = sub.add_parser("config", help="show version, CPU ISA, threads, CUDA build")
    config.add_argument(
        "--isa", help="select an ISA level first (scalar, avx2, avx512, avx512_vnni, avx512_bf16, avx512_amx)"
    )
    config.set_defaults(run=_config)

    demo = sub.add_parser("demo", help="train, compress and compare a small CNN (5-8 min)")
    demo.add_argument("--out", default="pyfastcnn-demo", help="output folder")
    demo.add_argument("--quick", action="store_true", help="seconds-long smoke run")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo.set_defaults(run=_demo)

    def model_args(p, compress_opts=True):
        p.add_argument("--model", required=True,
                       help="a saved torch.nn.Module file, or resnet18|resnet50|mobilenet_v2|"
                            "cifar_resnet20 (random weights)")
        p.add_argument("--input-size", type=_int_list, help="C,H,W of one input image")
        if compress_opts:
            p.add_argument("--sparsity", type=float, help="prune this fraction of weights")
            p.add_argument("--structure", default="unstructured",
                           help="unstructured | block | 2:4 | N:M")
            p.add_argument("--quantize", choices=("int8", "bf16", "fp16"))
            p.add_argument("--calib-data",
                           help="calibration images: a folder (searched recursively; resized, "
                                "centre-cropped to --input-size, normalized with --mean/--std) "
                                "or a .pt file holding a float tensor [N, C, H, W]")
            p.add_argument("--calib-samples", type=int, default=256,
                           help="use at most this many calibration images (default 256)")
            p.add_argument("--mean", type=_float_list,
                           help="per-channel mean for image folders (default: ImageNet's for "
                                "3 channels)")
            p.add_argument("--std", type=_float_list,
                           help="per-channel std for image folders (default: ImageNet's for "
                                "3 channels)")
            p.add_argument("--calib-random", action="store_true",
                           help="random calibration data (speed-only runs)")

    comp = sub.add_parser("compress", help="prune / quantize / fuse a model and save it")
    model_args(comp)
    comp.add_argument("--out", required=True, help="output file (torch.save of the model)")
    comp.set_defaults(run=_compress)

    bench = sub.add_parser("bench", help="whole-model latency against PyTorch")
    model_args(bench)
    bench.add_argument("--batch", type=_int_list, default=[1, 8])
    bench.add_argument("--threads", type=_int_list, default=[1, 2])
    bench.add_argument("--runs", type=int, default=10)
    bench.add_argument("--no-runtimes", action="store_true",
                       help="leave out ONNX Runtime and OpenVINO (run when installed: the "
                            "compressed model exported to ONNX, QDQ for INT8)")
    bench.set_defaults(run=_bench)

    rep = sub.add_parser("report", help="per-layer params, sizes, FLOPs, kernels, latency")
    model_args(rep, compress_opts=False)
    rep.add_argument("--batch", type=int, default=1)
    rep.add_argument("--runs", type=int, default=5)
    rep.set_defaults(run=_report)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (CliError, ValueError, TypeError, ImportError, OSError, RuntimeError) as error:
        print(f"pyfastcnn {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pyfastcnn {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
