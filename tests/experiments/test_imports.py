"""`plan` computes in milliseconds, so it must not pay for libraries it does not use: in a fresh interpreter a plan
(a time budget, from a law and a device profile) loads neither JAX, Flax, Orbax nor Matplotlib (seconds of imports
each), and Matplotlib only when it draws (`--out`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("jax", "flax", "orbax.checkpoint", "optax", "matplotlib")
CODE = """
import json, sys
from smallest_loss.experiments.cli import main
code = main(sys.argv[1:])
print(json.dumps(dict(code=code, loaded=[m for m in {heavy!r} if m in sys.modules])))
"""


def _plan(*extra: str) -> dict:
    argv = ["plan", "--budget", "1min", "--law", "results/cpu/quickstart/law.json"]
    argv += ["--profile", "results/cpu/quickstart/calibration/profile.json", "--top", "1", *extra]
    done = subprocess.run(
        [sys.executable, "-c", CODE.format(heavy=HEAVY), *argv], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_plan_loads_no_jax_flax_orbax_or_matplotlib(tmp_path):
    assert _plan() == dict(code=0, loaded=[])
    drawn = _plan("--out", str(tmp_path / "plan"))
    assert drawn["code"] == 0 and drawn["loaded"] == ["matplotlib"]
    assert (tmp_path / "plan" / "plan.png").read_bytes().startswith(b"\x89PNG")
