"""The `rtmdet-edge` command: one subcommand per module, each exposing add_arguments(parser) and run(args).

A user mistake (bad path, wrong checkpoint, malformed data) is one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import sys
import warnings
from collections.abc import Sequence
from typing import NoReturn

from rtmdet_edge.errors import UserError

# name -> (module, one-line help). Modules are imported when the parser is built so --help lists every option.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("rtmdet_edge.training.train", "train RTMDet (single process, or many under torchrun)"),
    "eval": ("rtmdet_edge.evaluation.eval_cmd", "COCO mAP of a checkpoint on a dataset"),
    "predict": ("rtmdet_edge.inference.predict", "detect on images, folders, videos or a camera"),
    "export": ("targets.export_cmd", "export to ONNX, OpenVINO IR or a TensorRT engine"),
    "quantize": ("quant.cli", "INT8 post-training quantization and QAT"),
    "benchmark": ("targets.benchmark", "accuracy and speed of every target x precision"),
    "gap": ("quant.gap", "the INT8 gap study: block family x method x target"),
    "quickstart": ("rtmdet_edge.quickstart", "the whole story on synthetic data, on a CPU, in minutes"),
}


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Appends "(default: X)" to every option's help unless the help already states its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, argparse.SUPPRESS) or action.option_strings == []:
            return text
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            return text
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """A usage mistake (unknown option, invalid choice, missing value) is one line, as every other user error is;
    argparse's default prints the whole usage block above it. Subcommand parsers inherit this class."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, object]]:
    parser = _Parser(prog="rtmdet-edge", description=__doc__, formatter_class=_Formatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules: dict[str, object] = {}
    for name, (module_name, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name is None or not module_name.startswith(e.name):
                raise
            module = None  # not part of this version yet: listed, and says so when run
        p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=_Formatter)
        if module is not None:
            module.add_arguments(p)
            modules[name] = module
    return parser, modules


class _LogFormatter(logging.Formatter):
    """Warnings and errors read like the CLI's own lines (`rtmdet-edge: warning: ...`); info keeps its logger name."""

    def __init__(self) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno >= logging.WARNING and not record.exc_info:
            return f"rtmdet-edge: {record.levelname.lower()}: {record.getMessage()}"
        return super().format(record)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001 (warnings API)
    # One readable line per warning instead of Python's "path:line: UserWarning: ..." plus the source line.
    text = " ".join(str(message).split())
    print(f"rtmdet-edge: warning: {text}", file=file if file is not None else sys.stderr)


def setup_console(verbose: bool) -> None:
    """Logging and warnings as one line each on stderr; --verbose keeps Python's full warning format."""
    handler = logging.StreamHandler()
    handler.setFormatter(_LogFormatter())
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    if not verbose:
        warnings.showwarning = _show_warning


def main(argv: Sequence[str] | None = None) -> int:
    parser, modules = build_parser()
    args = parser.parse_args(argv)
    setup_console(args.verbose)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command not in modules:
        print(f"rtmdet-edge {args.command}: not available in this version yet", file=sys.stderr)
        return 2
    try:
        return int(modules[args.command].run(args) or 0)
    except UserError as e:
        if args.verbose:
            raise
        print(f"rtmdet-edge {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rtmdet-edge {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        # A full disk is the user's environment, not a bug: one line (files are written atomically, none is partial).
        if args.verbose or e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = f" while writing {e.filename}" if e.filename else ""
        message = f"no space left on the device{where}; nothing partial was kept"
        print(f"rtmdet-edge {args.command}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
