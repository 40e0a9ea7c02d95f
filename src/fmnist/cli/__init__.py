"""The `fmnist` command line: parse, call the library, format, map errors to exit codes.

Each command group lives in its own module with a ``register(commands)`` function.
Every user-facing problem is an FmnistError: printed as one line, exit status 2.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from fmnist import __version__
from fmnist.cli import analysis, data, predict, runs, serve, train, tune
from fmnist.cli.common import EXIT_USAGE, Parser, setup_logging
from fmnist.errors import FmnistError
from fmnist.files import disk_full_error, is_no_space

COMMAND_MODULES = (data, train, predict, serve, analysis, runs, tune)
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what the shell reports for a tool stopped by a closed pipe


def build_parser() -> Parser:
    parser = Parser(prog="fmnist", description="Train, understand and serve Fashion-MNIST classifiers.")
    parser.add_argument("--version", action="version", version=f"fmnist {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    commands.required = True
    for module in COMMAND_MODULES:
        module.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit status."""
    try:
        try:
            return _run(argv)
        finally:
            sys.stdout.flush()  # output that fitted the buffer meets a closed reader here, not at exit
    except BrokenPipeError:
        return _reader_went_away()


def console_main() -> int:
    """The `fmnist` program: ``main`` and, after a refusal, an exit without the interpreter's
    teardown. The one-line error is printed and every file fmnist writes is already in place
    (atomic writes), but a native library can still abort in teardown. pyarrow's CSV reader
    did so after a bad row ("terminate called without an active exception", SIGABRT,
    apache/arrow#34314), which turned exit status 2 into a crash."""
    status = main()
    if status == EXIT_USAGE:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass  # a closed reader or stream: nothing left to say to it
        os._exit(status)
    return status


def _reader_went_away() -> int:
    """``fmnist ... | head -1``: the reader closed the pipe. Quietly, like a tool killed by
    SIGPIPE (status 128 + 13); stdout goes to /dev/null so the interpreter's final flush
    does not report the same broken pipe again (Python's documented recipe)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass  # stdout is not a file descriptor (an in-process caller's capture): nothing to flush
    return EXIT_BROKEN_PIPE


def _run(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(getattr(args, "quiet", False))
    try:
        return args.handler(args)
    except FmnistError as error:
        print(f"fmnist: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except PermissionError as error:
        # A path this user may not read or write (data, config, image, run folder) that no
        # reader turned into an FmnistError: one line naming it instead of a traceback.
        where = error.filename if error.filename is not None else "a file"
        fix = "check its permissions with ls -l, or run as a user who may use it"
        print(f"fmnist: error: {where}: permission denied ({fix})", file=sys.stderr)
        return EXIT_USAGE
    except OSError as error:
        # A full disk met by a writer outside fmnist.files (a library writing its own file).
        if not is_no_space(error):
            raise
        print(f"fmnist: error: {disk_full_error(error.filename or '.')}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        run_dir = getattr(args, "resume", None) or getattr(args, "out", None)
        if getattr(args.handler, "__name__", "") == "cmd_train" and run_dir and Path(run_dir).is_dir():
            # The last finished epoch's checkpoint is kept: say how to continue from it.
            print(f"fmnist: interrupted (continue with: fmnist train --resume {run_dir})", file=sys.stderr)
        else:
            print("fmnist: interrupted", file=sys.stderr)
        return 130
