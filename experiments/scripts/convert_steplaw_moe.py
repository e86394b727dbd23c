"""Li et al. 2025's dense and MoE runs (Step Law, arXiv:2503.04715) as one MoE table for `fit --form moe`:
`N_active, N_total, experts, top_k, D, loss, lr, batch, shape`, one row per run that did not diverge.

Input: this repository's conversion of the upstream files (results/public/steplaw/dense.csv and moe.csv, written by
experiments/scripts/convert_steplaw.py from github.com/step-law/steplaw at commit
32a8f4cc50247695fb56cc6c9117abdf67c97763, `data/dense_lr_bs_loss.csv` and `data/moe_lr_bs_loss.csv`).

- Dense rows: `experts` = 1, `top_k` = 1, `N_total` = `N_active` = upstream `N` (non-embedding parameters).
- MoE rows: `N_active` = upstream `Na`, `N_total` = upstream `N`. The expert count and top-k are not columns
  upstream; they are read from the run's name, whose `XinY` says X of Y routed experts are active per token
  (`1in89`, `2in88`, `1in8`, `3in8`). The reading is checked against the names' widths: every shape's routed
  experts (`moeh`, the expert's hidden width, times Y) plus its shared expert (`sed`, X times `moeh`) add up to
  the same total FFN width (31,680 to 31,768), as the shapes' equal N_total (2.15-2.16B) requires. The shared
  expert is not counted in `experts`.
- `loss` is upstream's smoothed final training loss; `lr`, `batch` (sequences of 2,048 tokens) as converted;
  runs marked `diverged` there are left out (none is the best of its configuration).

    python -m smallest_loss.experiments.scripts.convert_steplaw_moe [--out experiments/data/steplaw_moe_joint.csv]
"""

from __future__ import annotations

import argparse
import csv
import re
from pathlib import Path

from smallest_loss.configs.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "results/public/steplaw"
OUT = ROOT / "experiments/data/steplaw_moe_joint.csv"
COLUMNS = ("N_active", "N_total", "experts", "top_k", "D", "loss", "lr", "batch", "shape")
SHAPE = re.compile(r"_(\d+)in(\d+)_moeh(\d+)_sed(\d+)_")


def shape_of(run: str) -> str:
    """The run's shape: its name up to the learning rate."""
    return run.split("_lr")[0]


def experts_of(run: str) -> tuple[int, int, int]:
    """(top_k, routed experts, total FFN width) from a MoE run's name; refused when the name has no `XinY`."""
    match = SHAPE.search(run)
    if not match:
        raise UserError(f"MoE run {run!r}: its name has no XinY_moehW_sedS to read the experts from")
    top_k, experts, width, shared = map(int, match.groups())
    if shared != top_k * width:
        raise UserError(f"MoE run {run!r}: shared expert width {shared} is not top_k x expert width")
    return top_k, experts, experts * width + shared


def rows(source: Path = SOURCE) -> list[dict[str, object]]:
    """The dense and MoE runs that did not diverge, as MoE-table rows."""
    out: list[dict[str, object]] = []
    for name in ("dense", "moe"):
        with (source / f"{name}.csv").open(newline="") as fh:
            for up in csv.DictReader(fh):
                if up["status"] != "ok":
                    continue
                top_k, experts = (experts_of(up["run"])[:2]) if name == "moe" else (1, 1)
                total = up["N_total"] if name == "moe" else up["N"]
                row = dict(N_active=up["N"], N_total=total, experts=experts, top_k=top_k, D=up["D"], loss=up["loss"])
                out.append(row | dict(lr=up["lr"], batch=up["batch"], shape=shape_of(up["run"])))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", type=Path, default=SOURCE)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    table = rows(args.source)
    widths = {experts_of(str(r["shape"]) + "_")[2] for r in table if r["experts"] != 1}
    print(f"{len(table)} runs; MoE shapes' total FFN widths {sorted(widths)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(table)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
