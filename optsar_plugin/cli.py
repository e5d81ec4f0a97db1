"""``python -m optsar_plugin <command> ...``: the engine's command line.

Each command lives in its own module, which provides ``add_arguments(parser)`` and
``run_cli(args, feedback) -> int``; modules are imported only when their command
runs.  User errors print one line (``error: ...``) and exit with status 2 (``batch`` exits with 1
when a scene failed: its manifest says which and why); SIGTERM
removes the run's temporary files and exits with status 143.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import List

from .errors import OptsarError, Terminated
from .progress import PrintFeedback

# command -> (module, help)
COMMANDS = {
    "env": ("optsar_plugin.environment", "report Python, torch, CUDA/GPU, timm and mamba-ssm"),
    "models": ("optsar_plugin.environment", "list the available networks"),
    "classify": ("optsar_plugin.inference.cli", "classify an optical + SAR scene with a checkpoint"),
    "batch": ("optsar_plugin.batch.cli", "classify many scenes on a Dask cluster into a manifest, areas and a mosaic"),
    "train": ("optsar_plugin.training", "train or fine-tune a network and write a checkpoint"),
    "assess": ("optsar_plugin.accuracy.cli", "assess a classification against reference polygons or points"),
    "sample": ("optsar_plugin.accuracy.sample_cli", "draw a stratified random sample from a classification"),
    "make-sample-scene": ("optsar_plugin.sample_scene", "generate the synthetic demo scene"),
    "worker": ("optsar_plugin.worker", "run one JSON job and stream JSON-line events (what QGIS calls)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m optsar_plugin", description=__doc__.splitlines()[0])
    parser.add_argument("-q", "--quiet", action="store_true", help="print only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        # add_help=False: "COMMAND -h" reaches the command module's own parser, which knows its options
        p = sub.add_parser(name, help=help_text, add_help=False)
        p.set_defaults(_module=module)
        p.set_defaults(_name=name)
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # Parse the command first, then let its module add its own arguments.
    args, rest = parser.parse_known_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    module = importlib.import_module(args._module)
    sub = argparse.ArgumentParser(prog=f"python -m optsar_plugin {args.command}")
    module.add_arguments(sub)
    sub_args = sub.parse_args(rest)
    sub_args.command = args.command
    feedback = PrintFeedback(quiet=args.quiet)
    from .fileio import terminate_on_sigterm

    terminate_on_sigterm()
    try:
        return int(module.run_cli(sub_args, feedback) or 0)
    except Terminated as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 143
    except OptsarError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def int_list(text: str) -> List[int]:
    """``"2,3,4"`` -> [2, 3, 4]: an argparse type for band lists."""
    try:
        return [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated band numbers such as 1,2,3, got '{text}'") from None

