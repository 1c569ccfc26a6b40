"""The ``lightning-convergence`` command."""

from __future__ import annotations

import argparse
import sys


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from lightning_convergence.demo.faults import FAULTS

    parser = argparse.ArgumentParser(prog="lightning-convergence", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="train a faulty model without and with the suite, and explain")
    demo.add_argument("--fault", choices=sorted(FAULTS), default="lr_high")
    demo.add_argument("--out", default="convergence_demo", help="output folder (TensorBoard logs, reports)")
    demo.add_argument("--epochs", type=_positive_int, default=4)
    demo.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from lightning_convergence.demo.run import run_demo

        run_demo(fault=args.fault, out=args.out, epochs=args.epochs, seed=args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
