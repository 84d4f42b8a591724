"""The ``cvat-detr`` command: export a CVAT task as a training set, train DETR on it locally,
publish trained models as CVAT detectors (Nuclio functions), annotate tasks with them.

Each command is a class with ``description``, ``configure_parser`` and ``execute``, as in
cvat-cli. ``main`` is the one place where errors become messages and exit codes.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence, TextIO

from cvat_plugin.cli.annotate import AnnotateCommand
from cvat_plugin.cli.exits import EXIT_CODES_HELP, EXIT_INTERRUPTED, FAILURES, exit_code
from cvat_plugin.cli.jobs import CancelCommand, StatusCommand
from cvat_plugin.cli.models import ModelsCommand, PublishCommand, UnpublishCommand
from cvat_plugin.cli.options import connection_parser, nuclio_parser
from cvat_plugin.cli.train import ExportCommand, TrainCommand
from cvat_plugin.progress import NullProgressReporter, TqdmProgressReporter

COMMANDS = {"export": ExportCommand(), "train": TrainCommand(), "publish": PublishCommand(),
            "unpublish": UnpublishCommand(), "models": ModelsCommand(), "annotate": AnnotateCommand(),
            "status": StatusCommand(), "cancel": CancelCommand()}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cvat-detr", description="Train DETR on CVAT tasks and projects.", epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    connections = {"cvat": connection_parser(), "nuclio": nuclio_parser()}
    for name, command in COMMANDS.items():
        parents = [connections[kind] for kind in getattr(command, "connections", ("cvat",))]
        sub = subparsers.add_parser(name, help=command.description, description=command.description,
                                    parents=parents, epilog=EXIT_CODES_HELP,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        command.configure_parser(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None, *, stdout: TextIO = sys.stdout, stderr: TextIO = sys.stderr) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits 2 on bad usage and 0 on --help
        return int(e.code or 0)
    args.argv = argv
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=stderr,
                        format="%(levelname)s: %(message)s", force=True)
    if not args.verbose:  # their retry and import chatter is ours to summarise
        for noisy in ("urllib3", "datumaro"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
    pbar = NullProgressReporter() if args.quiet else TqdmProgressReporter(file=stderr, leave=False)

    try:
        return COMMANDS[args.command].execute(args, stdout, pbar)
    except KeyboardInterrupt:
        print(f"cvat-detr {args.command}: interrupted", file=stderr)
        return EXIT_INTERRUPTED
    except Exception as e:
        code = exit_code(e)
        if code is None:
            raise
        print(f"cvat-detr {args.command}: {FAILURES.get(code, 'error')}: {e}", file=stderr)
        return code

if __name__ == "__main__":
    sys.exit(main())

