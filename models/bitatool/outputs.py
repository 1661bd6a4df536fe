"""What a command may write over at its --out path. A package folder that is not empty may be a
package someone serves, and a model file that no resumable run of ours left behind is a finished
model from elsewhere: neither is replaced unless --force. Both refusals are file errors
(FileExistsError: 'bitatool <command>: error: <path>: ...', exit 1), raised before anything loads."""
from __future__ import annotations

import os


def add_force(p, what: str) -> None:
    p.add_argument("--force", action="store_true", help=f"replace {what}")


def check_package_dir(path: str, force: bool, own: str | None = None) -> None:
    """Refuse a folder that exists and holds anything, unless force or it is `own`, the folder a
    recipe builds its package in (and rebuilds in place)."""
    if own and os.path.realpath(path) == os.path.realpath(own):
        return
    if not force and os.path.isdir(path) and os.listdir(path):
        raise FileExistsError(f"{path}: folder exists and is not empty (it may hold a package in use); "
                              "choose a new folder, or pass --force to write over it")


def check_trained_file(path: str | None, ckpt: str, force: bool) -> None:
    """Refuse an existing output file when `ckpt`, the run's resumable checkpoint, is not there: the
    file was not written by this run (with it, the run resumes and rewrites its own output)."""
    if path and not force and os.path.exists(path) and not os.path.exists(ckpt):
        raise FileExistsError(f"{path}: exists and this run has no checkpoint to resume ({ckpt}), so it was "
                              "made elsewhere; choose another --out, or pass --force to replace it")
