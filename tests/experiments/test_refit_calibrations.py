"""experiments/scripts/refit_calibrations.py on two of the committed quickstart calibrations."""

from __future__ import annotations

import tarfile
from pathlib import Path

from smallest_loss.experiments.scripts.refit_calibrations import main

PACK = Path(__file__).resolve().parents[2] / "results/cpu/calibrations/quickstart.tar.gz"


def test_refits_calibrations_beside_their_noise_floor(tmp_path, capsys):
    with tarfile.open(PACK) as tar:
        names = sorted({n.split("/")[0] for n in tar.getnames()})[-2:]  # the two newest
        tar.extractall(tmp_path, members=[m for m in tar.getmembers() if m.name.split("/")[0] in names],
                       filter="data")  # fmt: skip
    main([str(tmp_path), "--without", "exact-grouped-thrash,exact-kinds-thrash"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| 2026")]
    assert len(rows) == 2 and all("%" in row for row in rows)
    assert all(row.split(" | ")[5] not in ("exact-grouped-thrash", "exact-kinds-thrash") for row in rows)
    assert "2 calibrations: the best model held out at" in out and "within twice the noise floor in" in out
