"""Train a finished run's exact configuration again at other seeds (other initialisation and data order).

One run's loss is one draw: two seeds of one configuration differ by about 0.5-1% on this project's CPU models,
as much as two recipes a plan weighs against each other. This script retrains each RUN with `train.seed` set to
each of `--seeds`, into OUT/<run name>-seed<k> (a killed retraining resumes), and prints the final losses:

    python experiments/scripts/repeat_seeds.py RUN [RUN ...] --seeds 1,2 --out runs/seeds

Compare the runs on one common validation sample afterwards with `experiments/scripts/evaluate_runs.py`.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from smallest_loss.configs.errors import UserError
    from smallest_loss.model.runs import RunDir
    from smallest_loss.model.train import train

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="finished run folders whose configuration to repeat")
    p.add_argument("--seeds", required=True, help="comma-separated seeds, e.g. 1,2")
    p.add_argument("--out", required=True, help="folder for the repeated runs")
    args = p.parse_args(argv)
    try:
        seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
        if not seeds:
            raise ValueError
        for folder in args.runs:
            cfg = RunDir.open(folder).config
            for seed in seeds:
                out = Path(args.out) / f"{Path(folder).name}-seed{seed}"
                again = (out / "config.json").is_file()  # a killed retraining resumes
                summary = train(
                    dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed)),
                    out,
                    resume=again,
                    progress=False,
                )
                print(
                    f"{out}: final eval loss {summary['final_eval_loss']:.4f}, {summary['wall_seconds']:.0f} s",
                    flush=True,
                )
    except ValueError:
        print(f"repeat_seeds: --seeds {args.seeds!r}: expected integers, e.g. 1,2")
        return 2
    except UserError as err:
        print(f"repeat_seeds: {err}")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
