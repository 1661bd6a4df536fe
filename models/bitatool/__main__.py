"""`python3 -m bitatool <command>` (run with models/ on PYTHONPATH, or via `npm run model -- …`)."""
import argparse
import importlib
import os
import sys

# Each module exposes register(subparsers); it adds its commands with set_defaults(func=...).
COMMAND_MODULES = [
    "bitatool.cli_import",
    "bitatool.cli_train",
    "bitatool.cli_ngram",
    "bitatool.cli_random",
    "bitatool.cli_mask_aware",
]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="bitatool", description=__doc__)
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name in COMMAND_MODULES:
        try:
            importlib.import_module(name).register(sub)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (OSError, ValueError) as e:  # a missing, unreadable or malformed input or output path
        if os.environ.get("BITATOOL_TRACEBACK"):
            raise
        print(f"bitatool {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
