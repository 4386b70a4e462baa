"""Entry point of the `unimoe-audio` console script.

Every module in this package that defines `register(subparsers)` contributes subcommands; each
subcommand sets `func(args) -> int | None`. User mistakes raise `UniMoEError`, printed here
without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

import unimoe_audio.cli as cli_pkg
from unimoe_audio import __version__
from unimoe_audio.errors import UniMoEError
from unimoe_audio.io import WRITE_ERRORS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unimoe-audio",
        description="Train, run and evaluate UniMoE-Audio (speech + music, Dynamic-Capacity MoE).",
    )
    parser.add_argument("--version", action="version", version=f"unimoe-audio {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(cli_pkg.__path__), key=lambda m: m.name):
        if info.name == "main":
            continue
        module = importlib.import_module(f"{cli_pkg.__name__}.{info.name}")
        if hasattr(module, "register"):
            module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except UniMoEError as err:
        print(f"unimoe-audio {args.command}: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # whoever read the output stopped reading (`| head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush fails silently too
        return 141  # 128 + SIGPIPE, what a shell reports for such a tool
    except OSError as err:  # a write outside atomic_path: unwritable folder or full disk
        if err.errno not in WRITE_ERRORS:
            raise
        print(f"unimoe-audio {args.command}: error: cannot write {err.filename or 'an output file'}: {err.strerror}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
