"""The `fmnist` command line: parse, call the library, format, map errors to exit codes.

Each command group lives in its own module with a ``register(commands)`` function.
Every user-facing problem is an FmnistError: printed as one line, exit status 2.
"""

from __future__ import annotations

import sys

from fmnist import __version__
from fmnist.cli import analysis, data, predict, serve, train
from fmnist.cli.common import EXIT_USAGE, Parser, setup_logging
from fmnist.errors import FmnistError

COMMAND_MODULES = (data, train, predict, serve, analysis)


def build_parser() -> Parser:
    parser = Parser(prog="fmnist", description="Train, understand and serve Fashion-MNIST classifiers.")
    parser.add_argument("--version", action="version", version=f"fmnist {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    commands.required = True
    for module in COMMAND_MODULES:
        module.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(getattr(args, "quiet", False))
    try:
        return args.handler(args)
    except FmnistError as error:
        print(f"fmnist: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("fmnist: interrupted", file=sys.stderr)
        return 130
