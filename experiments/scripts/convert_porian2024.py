"""Porian et al. 2024's IsoFLOP sweeps as fit CSVs (N, D, loss, C): public data for the interval check.

Porian, Wortsman, Jitsev, Schmidt and Carmon, "Resolving Discrepancies in Compute-Optimal Scaling of Language
Models" (NeurIPS 2024, arXiv 2406.19146). Their repository (github.com/formll/resolving-scaling-law-discrepancies)
ships each experiment's analysis as a pickled pandas table, `data/summary_df*.pickle.xz`: one row per experiment
(data set, hyperparameters, warm-up, decay, parameter count, train or validation loss), whose `data` table holds,
per FLOP budget (`flops`), the runs trained at it (`orig_n` parameters, `orig_t` tokens, `orig_loss`). Each
experiment becomes one CSV; `C` is the budget the runs were trained for.

    python -m smallest_loss.experiments.scripts.convert_porian2024 PATH_TO_REPO [--out results/public/porian2024]

Needs pandas (to read the pickles; the rest of the package does not). The pickles name only pandas and numpy
classes (checked with pickletools before they were first read here).
"""

from __future__ import annotations

import argparse
import io
import lzma
import math
import subprocess
from pathlib import Path

from smallest_loss.configs.errors import UserError
from smallest_loss.experiments.scripts.public_source import is_bare_git, upstream_commit, write_csv

FILES = ("summary_df", "summary_df_att", "summary_df_owt2", "summary_df_kaplan_tuned_hparams")
KEYS = ("dataset", "hparams", "warmup", "decay", "param_count", "val")
OUT = Path(__file__).resolve().parents[2] / "results/public/porian2024"


def read_bytes(root: Path, path: str) -> bytes:
    """A binary file of the repository at `root` (a checkout, or a bare git directory at HEAD)."""
    if not is_bare_git(root):
        return (root / path).read_bytes()
    shown = subprocess.run(["git", "--git-dir", str(root), "show", f"HEAD:{path}"], capture_output=True, check=False)
    if shown.returncode:
        raise UserError(f"{root} has no {path}: is it Porian et al.'s repository?")
    return shown.stdout


def experiments(root: Path) -> dict[str, list[dict[str, float]]]:
    """{name: rows N, D, loss, C} for every experiment of every summary file."""
    try:
        import pandas as pd  # noqa: PLC0415  only this converter needs pandas
    except ImportError:
        raise UserError("convert_porian2024 reads pickled pandas tables: pip install pandas") from None
    out = {}
    for name in FILES:
        table = pd.read_pickle(io.BytesIO(lzma.decompress(read_bytes(root, f"data/{name}.pickle.xz"))))
        for _, row in table.iterrows():
            key = "-".join([name.removeprefix("summary_df").strip("_") or "main"] + [str(row[k]) for k in KEYS])
            out[key] = [run for _, budget in row["data"].iterrows() for run in budget_runs(budget)]
    return out


def budget_runs(budget) -> list[dict[str, float]]:  # noqa: ANN001  a pandas row
    """The runs of one budget with finite, positive N, D and loss (a budget without runs holds NaN)."""
    columns = [budget[k] for k in ("orig_n", "orig_t", "orig_loss")]
    if not all(hasattr(c, "__len__") for c in columns):
        return []
    rows = [
        dict(N=float(n), D=float(t), loss=float(loss), C=float(budget["flops"]))
        for n, t, loss in zip(*columns, strict=True)
    ]
    return [r for r in rows if all(math.isfinite(v) and v > 0 for v in r.values())]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("repo", help="a checkout or bare git directory of formll/resolving-scaling-law-discrepancies")
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args(argv)
    root, out = Path(args.repo), Path(args.out)
    tables = experiments(root)
    for name, rows in tables.items():
        write_csv(rows, ["N", "D", "loss", "C"], out / f"{name}.csv")
    print(f"{len(tables)} experiments from commit {upstream_commit(root)} written to {out}")


if __name__ == "__main__":
    main()
