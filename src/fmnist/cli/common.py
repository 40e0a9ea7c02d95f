"""Pieces shared by the command modules: the parser class, argument types, output setup."""

from __future__ import annotations

import argparse
import logging
import re
import sys
from typing import NoReturn

EXIT_USAGE = 2
log = logging.getLogger("fmnist")


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"fmnist: error: {message} (see {self.prog} --help)\n")

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        self._refuse_empty_paths(namespace)
        return namespace, extras

    def _refuse_empty_paths(self, namespace: argparse.Namespace) -> None:
        # `--init "$RUN"` with RUN unset passes "": read as "no value" it would silently
        # train from scratch (or write to the default folder); refused instead, for every
        # argument whose metavar names a path.
        for action in self._actions:
            if not isinstance(action.metavar, str) or not _PATH_METAVAR.search(action.metavar):
                continue
            value = getattr(namespace, action.dest, None)
            if any(isinstance(item, str) and not item.strip() for item in (value if isinstance(value, list) else [value])):
                name = action.option_strings[-1] if action.option_strings else action.metavar
                self.error(f"{name} is an empty path (give a {action.metavar}; is a shell variable unset?)")


_PATH_METAVAR = re.compile(r"DIR|PATH|FILE|RUN|MODEL|IMAGE|INPUT|SOURCE")


def whole_number(text: str, low: int, high: int | None = None, what: str = "number") -> int:
    """An int in [low, high] from a flag's text, or an argparse error naming the range."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole {what}, got {text!r}") from None
    if value < low or (high is not None and value > high):
        expected = f">= {low}" if high is None else f"between {low} and {high}"
        raise argparse.ArgumentTypeError(f"expected a {what} {expected}, got {value}")
    return value


def positive_int(text: str) -> int:
    return whole_number(text, 1)


def non_negative_int(text: str) -> int:
    return whole_number(text, 0)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {value}")
    return value


def fraction(text: str) -> float:
    value = positive_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {value}")
    return value


def probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a probability between 0 and 1, got {value}")
    return value


def setup_logging(quiet: bool) -> None:
    """Library log records go to stderr: info as plain lines, warnings prefixed."""
    handler = logging.StreamHandler(sys.stderr)

    class _Format(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            message = record.getMessage()
            return f"fmnist: warning: {message}" if record.levelno >= logging.WARNING else message

    handler.setFormatter(_Format())
    log.handlers[:] = [handler]
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False


def progress_enabled(args: argparse.Namespace) -> bool:
    return not getattr(args, "quiet", False) and sys.stderr.isatty()
