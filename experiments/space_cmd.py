"""`smallest-loss space`: the built-in search spaces, and any space (built-in or file) as a space file to edit.

`space` lists the built-in spaces; `space --show NAME` prints one as TOML (configs/spaces.py, `space_to_toml`), which
`plan --space FILE.toml` reads back (`load_space_file`): the way to widen a space whose edge a plan sits on.
"""

from __future__ import annotations

import argparse

from smallest_loss.configs.spaces import SPACES, get_space, space_to_toml
from smallest_loss.scaling.plan import param_range


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--show",
        metavar="SPACE",
        help="print this space (a built-in name or a space file) as a space file (TOML) to edit and pass to "
        "plan --space FILE.toml",
    )


def run(args: argparse.Namespace) -> int:
    if args.show:
        print(space_to_toml(get_space(args.show)), end="")
        return 0
    for name, space in SPACES.items():
        lo, hi = param_range(space)
        print(
            f"{name}: {'/'.join(space.backends)} in {space.dtype}, d {min(space.d)}-{max(space.d)}, n "
            f"{min(space.n)}-{max(space.n)}, {lo:.3g} to {hi:.3g} parameters"
        )
    print("show one as a space file to edit: smallest-loss space --show NAME > myspace.toml; plan --space myspace.toml")
    return 0
