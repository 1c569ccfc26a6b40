"""Train a small CNN on the bundled 8x8 digits with the convergence suite set up in YAML.

The whole run, callbacks included, is described by ``suite.yaml`` next to this file; any value
can be overridden on the command line, and LightningCLI checks every argument's type before a
Trainer is built.

Example:
    python examples/train_digits.py fit --config examples/suite.yaml
    python examples/train_digits.py fit --config examples/suite.yaml --trainer.max_epochs=1
    python examples/train_digits.py fit --print_config  # every argument, with its default
"""

from __future__ import annotations

from lightning.pytorch.cli import LightningCLI

from lightning_convergence.demo.data import DigitsDataModule
from lightning_convergence.demo.models import DigitsCNN


def main(args: list[str] | None = None, run: bool = True) -> LightningCLI:
    """Build the CLI (and run its subcommand when ``run``); ``args`` replace ``sys.argv``."""
    return LightningCLI(DigitsCNN, DigitsDataModule, args=args, run=run)


if __name__ == "__main__":
    main()
