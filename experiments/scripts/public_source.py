"""Read a file of a public repository already on this machine: a checkout (a folder) or a bare git directory
(`git clone --bare`, or a mirror), at a given revision. Nothing is downloaded.

Used by the converters of public sweeps and curves (convert_steplaw.py, convert_multipower.py), which take the
upstream repository's path as their argument.
"""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

from smallest_loss.configs.errors import UserError


def is_bare_git(root: Path) -> bool:
    """Whether `root` is a git directory without a work tree (HEAD and objects/ at its top)."""
    return (root / "HEAD").is_file() and (root / "objects").is_dir()


def read_upstream(root: str | Path, path: str, revision: str = "HEAD") -> str:
    """The text of `path` in the repository at `root`: read from the folder of a checkout, or with `git show
    revision:path` from a bare git directory."""
    root = Path(root)
    if not root.exists():
        raise UserError(f"{root} does not exist: give the upstream repository's checkout or bare git directory")
    if not is_bare_git(root):
        file = root / path
        if not file.is_file():
            raise UserError(f"{root} has no {path}: is it the right repository?")
        return file.read_text()
    shown = subprocess.run(["git", "--git-dir", str(root), "show", f"{revision}:{path}"],
                           capture_output=True, text=True, check=False)  # fmt: skip
    if shown.returncode:
        raise UserError(f"{root} has no {path} at {revision}: is it the right repository?")
    return shown.stdout


def upstream_commit(root: str | Path, revision: str = "HEAD") -> str:
    """The commit `revision` names in a bare git directory or a checkout ('' where git cannot say)."""
    root = Path(root)
    where = ["--git-dir", str(root)] if is_bare_git(root) else ["-C", str(root)]
    shown = subprocess.run(["git", *where, "rev-parse", revision], capture_output=True, text=True, check=False)
    return shown.stdout.strip() if shown.returncode == 0 else ""


def write_csv(rows: list[dict[str, object]], columns: list[str], path: Path) -> Path:
    """Write converted rows as a CSV with these columns (a row's missing cells empty), making its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path
