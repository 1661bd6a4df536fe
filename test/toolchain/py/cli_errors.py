"""Run bitatool's main() on several argument lists in one interpreter (each python + torch start
costs seconds here) and print, per list, its exit code, stderr and any exception that escaped.

usage: cli_errors.py [--parse-only] '<json list of argv lists>'
--parse-only: every command's function is replaced by a stub that prints "ran", so a run that
argument validation should have stopped does not train."""
import contextlib
import importlib
import io
import json
import sys

from bitatool import __main__ as cli

parse_only = sys.argv[1] == "--parse-only"
if parse_only:
    for name in cli.COMMAND_MODULES:
        mod = importlib.import_module(name)
        for attr in dir(mod):
            if attr.startswith("cmd_") or attr == "run":
                setattr(mod, attr, lambda a: print("ran") or 0)

out = []
for argv in json.loads(sys.argv[-1]):
    err, std = io.StringIO(), io.StringIO()
    raised = None
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(std):
        try:
            code = cli.main(argv)
        except SystemExit as e:
            code = e.code
        except BaseException as e:  # noqa: BLE001 - the test reports what escaped
            code, raised = None, f"{type(e).__name__}: {e}"
    out.append({"argv": argv, "code": code, "stderr": err.getvalue(), "stdout": std.getvalue(), "raised": raised})
print(json.dumps(out))
