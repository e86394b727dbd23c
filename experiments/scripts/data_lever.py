"""The data lever on this CPU: one IsoFLOP sweep per training corpus, every run evaluated on both corpora.

The two corpora are the embedded standard-library source ("full") and its code-only copy ("code":
comments and docstrings stripped, `smallest-loss corpus`), which keeps the file names and so holds out
the same validation files. The tables written are fit CSVs (columns N, D, loss, C, group):

- `by_corpus_on_full.csv`, `by_corpus_on_code.csv`: group = training corpus, loss on one evaluation set
  (the compute multiplier of one corpus against the other, for that target);
- `by_eval_set.csv`: the runs trained on the full text, group = evaluation set (the offset between the
  losses on two distributions, Kaplan et al. 2020, section 3.2.2);
- `runs.csv`: every run with both losses.

Usage: python -m smallest_loss.experiments.scripts.data_lever --work runs/data_lever --out results/cpu/data_lever
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
from pathlib import Path

from smallest_loss.configs.designs import get_design
from smallest_loss.configs.schema import DataConfig
from smallest_loss.experiments.cli import use_compilation_cache
from smallest_loss.experiments.sweep import run_sweep
from smallest_loss.model.data import stdlib_sources, write_code_only
from smallest_loss.model.runs import RunDir
from smallest_loss.scaling.collect import collect_runs

SETS = ("full", "code")


def run_sweeps(design_name: str, work: Path) -> dict[str, Path]:
    """Write the code-only corpus (once) and train the design on each corpus; returns the sweep folders."""
    code = work / "corpus-code"
    if not code.exists():
        write_code_only(stdlib_sources(), code)
    specs = {"full": "stdlib", "code": str(code)}
    eval_sets = tuple(f"{name}={spec}" for name, spec in specs.items())
    design = get_design(design_name)
    folders = {}
    for name, spec in specs.items():
        data = DataConfig(corpus=spec, eval_sets=eval_sets)
        sweep = dataclasses.replace(design, base=dataclasses.replace(design.base, data=data))
        folders[name] = work / f"sweep-{name}"
        print(f"{name}: {run_sweep(sweep, folders[name], progress=False)}", flush=True)
    return folders


def _rows(folders: dict[str, Path]) -> list[dict]:
    rows = []
    for corpus, folder in folders.items():
        records, _ = collect_runs([folder])
        for r in records:
            losses = RunDir.open(folder / r.name).read_summary()["final_eval_losses"]
            rows.append(
                dict(
                    run=r.name,
                    corpus=corpus,
                    N=r.N,
                    D=r.D,
                    C=r.budget,
                    **{f"loss_{name}": losses[name] for name in SETS},
                )
            )
    return rows


def _write(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_tables(folders: dict[str, Path], out: Path) -> None:
    """The fit CSVs described in the module docstring."""
    out.mkdir(parents=True, exist_ok=True)
    rows = _rows(folders)
    _write(out / "runs.csv", rows)
    for target in SETS:
        _write(
            out / f"by_corpus_on_{target}.csv",
            [dict(N=r["N"], D=r["D"], loss=r[f"loss_{target}"], C=r["C"], group=r["corpus"]) for r in rows],
        )
    _write(
        out / "by_eval_set.csv",
        [
            dict(N=r["N"], D=r["D"], loss=r[f"loss_{name}"], C=r["C"], group=name)
            for name in SETS
            for r in rows
            if r["corpus"] == "full"
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--design", default="data-isoflop")
    parser.add_argument("--work", default="runs/data_lever", help="corpus copy and run folders (not committed)")
    parser.add_argument("--out", default="results/cpu/data_lever", help="where the CSVs go")
    args = parser.parse_args()
    use_compilation_cache()
    write_tables(run_sweeps(args.design, Path(args.work)), Path(args.out))


if __name__ == "__main__":
    main()
