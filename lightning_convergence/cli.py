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
    faults = "; ".join(f"{name}: {spec['what']}" for name, spec in FAULTS.items())
    demo.add_argument("--fault", choices=sorted(FAULTS), default="lr_high", help=f"the failure to show ({faults})")
    demo.add_argument("--out", default="convergence_demo", help="output folder (TensorBoard logs, reports)")
    demo.add_argument("--epochs", type=_positive_int, default=None,
                      help="training epochs of each run (default: the fault's own, 4 for most)")
    demo.add_argument("--seed", type=int, default=0)
    report = commands.add_parser("report", help="print a run's diagnoses and interventions, and plot its curves")
    report.add_argument("logdir", help="a run folder, or a folder holding several runs (searched below)")
    report.add_argument("--format", choices=["text", "markdown", "json"], default="text")
    report.add_argument("--out", default=None, help="folder for the PNG figures (default: each run's folder)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from lightning_convergence.demo.run import run_demo

        run_demo(fault=args.fault, out=args.out, epochs=args.epochs, seed=args.seed)
    elif args.command == "report":
        from lightning_convergence.readback.command import report_command

        return report_command(args.logdir, format=args.format, out=args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
