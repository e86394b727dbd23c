"""Three training curves of a 100M GPT logged at every step (cosine, WSD and 8-1-1 step schedules) as one long
curve table: `run, step, tokens, lr, loss, N` (the schedule is in the logged `lr`).

Upstream: github.com/Morphorxz/dlt25-final, `loss_curve_repo/loss_curves/gpt_loss+lrs.pkl`, a course
assignment built on Luo et al. 2025's MultiPowerLaw repository. The pickle holds a dict of three pandas
DataFrames (`step`, `Metrics/loss`, `lr`) keyed `M:100M_gpt_D:20B_scheduler:{cosine,wsd,811}_rope`; the
folder's Readme.txt defines 8-1-1 as the rate divided by sqrt(10) at 80% and again at 90% of training. The
release does not say who trained the runs; the names say a 100M-parameter GPT with rotary embeddings on 20B
tokens.

As logged: steps 0 to 33,907 (two steps absent: 20,815 of wsd and 22,493 of cosine, left absent); the rate
starts at its peak 1e-3 at step 0 (no warmup in the logged `lr`) and ends at 1e-4: cosine over the whole run,
WSD decaying over the last 20% (its first lower rate at step 27,126), 8-1-1 stepping to 3.16e-4 at step
27,126 and to 1e-4 at step 30,517. The loss is the raw per-step training loss (not smoothed).

The conversion keeps every point; loss to 7 and lr to 8 significant digits. `N` = 1e8 (the name's nominal
size); `tokens` is left empty (the batch is not stated; 20B tokens over 33,908 steps would be about 5.9e5 per
step). To keep the file under 5 MB the per-row schedule description columns are left out: all three runs are
training losses with peak 1e-3, no warmup, 33,908 steps, final rate 1e-4 (README.md beside the table).

    python -m smallest_loss.experiments.scripts.convert_perstep_100m UPSTREAM [--out results/public/perstep_100m]

UPSTREAM is a checkout or a bare git directory of Morphorxz/dlt25-final; nothing is downloaded. Reading the
pickle needs pandas (and, as any pickle, runs code of the file's choosing: use it on this file only).
"""

from __future__ import annotations

import argparse
import pickle
import subprocess
import tempfile
from pathlib import Path

from smallest_loss.experiments.scripts.public_source import is_bare_git, upstream_commit, write_csv

PICKLE = "loss_curve_repo/loss_curves/gpt_loss+lrs.pkl"
RUNS = {"cosine": "cosine", "wsd": "wsd", "811": "step_811"}  # upstream key part -> our run name
OUT = Path(__file__).parents[2] / "results" / "public" / "perstep_100m"
COLUMNS = ["run", "step", "tokens", "lr", "loss", "N"]


def pickle_bytes(root: str | Path) -> bytes:
    """The upstream pickle's bytes, from a checkout's folder or a bare git directory."""
    root = Path(root)
    if not is_bare_git(root):
        return (root / PICKLE).read_bytes()
    return subprocess.run(["git", "--git-dir", str(root), "show", f"HEAD:{PICKLE}"],
                          capture_output=True, check=True).stdout  # fmt: skip


def curve_rows(blob: bytes) -> list[dict[str, object]]:
    """Every logged point of the three runs, by run then step."""
    import pandas  # noqa: F401  (the pickle's DataFrames need pandas to load)

    with tempfile.TemporaryFile() as f:
        f.write(blob)
        f.seek(0)
        frames = pickle.load(f)
    rows = []
    for part, name in RUNS.items():
        frame = frames[f"M:100M_gpt_D:20B_scheduler:{part}_rope"].sort_values("step")
        for step, loss, lr in zip(frame["step"], frame["Metrics/loss"], frame["lr"], strict=True):
            rows.append({"run": name, "step": int(step), "tokens": "", "lr": f"{lr:.8g}",
                         "loss": f"{loss:.7g}", "N": "1e8"})  # fmt: skip
    return rows


def write_curves(rows: list[dict[str, object]], path: Path) -> Path:
    """Write the long curve table."""
    return write_csv(rows, COLUMNS, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("upstream", help="checkout or bare git directory of github.com/Morphorxz/dlt25-final")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    print(f"upstream commit {upstream_commit(args.upstream) or 'unknown'}")
    rows = curve_rows(pickle_bytes(args.upstream))
    print(f"wrote {write_curves(rows, args.out / 'curves.csv')}: {len(rows)} points, 3 runs")


if __name__ == "__main__":
    main()
