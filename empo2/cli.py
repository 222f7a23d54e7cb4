"""The command line every entry point shares: `python -m empo2.<tool> [--config FILE]... [key=value]...`.

Why one helper: fit, evaluate, adapt, compare and sft take the same arguments (layered YAML files,
dotted overrides, `--print-config`) and must answer a bad config the same way — one
`config error: <key>: ...` line and exit code 2, before anything heavy loads — and a stopped run
the same way (the signal's exit code and the command that continues it). Each tool keeps only its
own work and report.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Callable, Sequence

from empo2.config import Config, ConfigError, load_config, to_yaml


@dataclass(frozen=True)
class Command:
    module: str
    """The module run with `python -m`, e.g. `empo2.fit`."""
    description: str
    example: str = ""
    """One typical invocation's arguments (after `python -m <module>`), shown at the end of `--help`."""
    config_help: str = "YAML file (every key: docs/CONFIG.md); repeat to layer presets"
    overrides_help: str = "key=value overrides, e.g. trainer.max_epochs=5"
    errors: tuple[type[Exception], ...] = ()
    """Errors besides ConfigError and FileNotFoundError (a model, checkpoint or data file that is not
    where the config says) that the tool reports as one `error:` line (exit 2)."""

    @property
    def prog(self) -> str:
        return f"python -m {self.module}"

    def parser(self) -> argparse.ArgumentParser:
        epilog = f"example:\n  {self.prog} {self.example}\n\nevery config key: docs/CONFIG.md" if self.example else None
        parser = argparse.ArgumentParser(prog=self.prog, description=self.description, epilog=epilog,
                                         formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.add_argument("--config", action="append", help=self.config_help)
        parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
        parser.add_argument("overrides", nargs="*", help=self.overrides_help)
        return parser

    def command_line(self, argv: Sequence[str] | None) -> str:
        """The command as a shell would take it back (quoted where an argument has spaces), for the
        line that says how to continue a stopped run."""
        import shlex

        return " ".join([self.prog, shlex.join(sys.argv[1:] if argv is None else argv)]).rstrip()


def run_command(command: Command, argv: Sequence[str] | None, body: Callable[[Config], int],
                rewrite: Callable[[list[str]], list[str]] = list) -> int:
    """Parse, load and check the config (`rewrite` may expand the tool's short override forms), then
    run `body`; config errors and the tool's own errors become one line on stderr and exit code 2."""
    args = command.parser().parse_args(argv)
    try:
        cfg = load_config(args.config, rewrite(args.overrides))
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    if args.print_config:
        print(to_yaml(cfg), end="")
        return 0
    try:
        return body(cfg)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    except (FileNotFoundError, *command.errors) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:  # however the run ended, the process group (if the run made one) goes before the interpreter does
        from empo2.distributed import release

        release()
