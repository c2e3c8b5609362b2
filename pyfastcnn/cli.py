"""The pyfastcnn command line (`pyfastcnn ...` or `python -m pyfastcnn ...`)."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional


def _config(args: argparse.Namespace) -> int:
    import pyfastcnn

    if args.isa:
        pyfastcnn.set_isa(args.isa)
    pyfastcnn.show_config()
    return 0 if pyfastcnn.config()["native"] else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyfastcnn", description="CNN compression and acceleration toolkit."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    config = sub.add_parser("config", help="show version, CPU ISA, threads, CUDA build")
    config.add_argument(
        "--isa", help="select an ISA level first (scalar, avx2, avx512, avx512_vnni, avx512_bf16)"
    )
    config.set_defaults(run=_config)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError, ImportError) as error:
        print(f"pyfastcnn {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
