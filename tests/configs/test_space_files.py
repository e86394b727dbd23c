"""Search spaces as user files (configs/spaces.py): every built-in space survives `space --show` and reading back;
a file with a base overrides only what it names and plans; a bad file is one line naming it; and the edge warning
points at a built-in space or a space file, never at a package file to edit."""

from __future__ import annotations

import dataclasses

import pytest
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.spaces import SPACES, get_space, load_space_file
from smallest_loss.experiments.cli import main
from smallest_loss.scaling.chinchilla import ChinchillaLaw
from smallest_loss.scaling.laws import LawFile
from smallest_loss.scaling.planner import make_plan, wider_space_hint

CHINCHILLA = LawFile(ChinchillaLaw(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28))


@pytest.mark.parametrize("name", list(SPACES), ids=[f"space{i}" for i in range(len(SPACES))])  # not "gpu": a mark
def test_show_then_read_back_is_the_same_space(name, tmp_path, capsys):
    assert main(["space", "--show", name]) == 0
    (tmp_path / f"{name}.toml").write_text(capsys.readouterr().out)
    assert get_space(str(tmp_path / f"{name}.toml")) == SPACES[name]


def test_a_file_with_a_base_changes_only_its_fields_and_plans(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(
        '{"base": "cpu", "d": {"start": 32, "stop": 64, "step": 32}, "n": [1, 2], "aspect_ratio": [1, null]}'
    )
    space = load_space_file(path)
    assert (space.name, space.d, space.n, space.v, space.s) == ("tiny", (32, 64), (1, 2), 256, (64,))
    assert space.aspect_ratio == (1.0, float("inf"))
    plan = make_plan("1e18", CHINCHILLA, space=str(path), top=1)
    assert plan.space == space and plan.space_choice == f"space {path}" and plan.best.d in (32, 64)
    assert "configs/spaces.py" not in (plan.warning or "") and "--space" in (plan.warning or "")


@pytest.mark.parametrize(
    "text, message",
    [
        ('base = "cpu"\nwidth = [8]\n', "unknown field 'width'"),
        ("d = [16, 32]\n", "missing field 'v'"),
        ('base = "tpu-huge"\n', "base 'tpu-huge' is not a built-in space"),
        ('base = "cpu"\nd = [16, -8]\n', "d must be a list of positive integers or {start, stop, step}"),
        ('base = "cpu"\nn = []\n', "n must be a list of positive integers"),
        ('base = "cpu"\ndtype = "float64"\n', "dtype 'float64' must be one of float32, bfloat16, float16"),
        ('base = "cpu"\naspect_ratio = [48, 12]\n', "aspect_ratio=(48.0, 12.0) needs 0 <= low < high"),
        ('base = "cpu"\nbackends = ["abacus"]\n', "backends must be a non-empty list of cpu, gpu, tpu"),
        ("base = \n", "does not parse"),
    ],
)
def test_a_bad_space_file_is_one_line_naming_it(text, message, tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(UserError, match="space file .*bad.toml") as err:
        load_space_file(path)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert main(["space", "--show", str(path)]) == 2
    out = capsys.readouterr().err.strip()
    assert out.startswith("error: space file") and message in out and "\n" not in out


def test_an_unknown_name_offers_a_file_and_a_missing_file_is_named(tmp_path):
    with pytest.raises(UserError, match="or pass a space file"):
        get_space("gpu-huge")
    with pytest.raises(UserError, match="space file .*none.toml does not exist"):
        get_space(str(tmp_path / "none.toml"))


def test_the_edge_warning_beyond_every_built_in_space_names_a_space_file():
    plan = make_plan("1e27", CHINCHILLA, space="chinchilla", top=1)
    assert "lies in no built-in space" in plan.warning and "configs/spaces.py" not in plan.warning
    assert "smallest-loss space --show chinchilla > wide.toml" in plan.warning and "--space wide.toml" in plan.warning
    mine = dataclasses.replace(SPACES["cpu"], name="mine", n=(1, 2))  # a user's own space: no built-in to show
    assert "copy your space file to wide.toml" in wider_space_hint(mine) and "--show" not in wider_space_hint(mine)


def test_plan_reads_a_space_file(tmp_path, capsys):
    CHINCHILLA.save(tmp_path / "law.json")
    (tmp_path / "small.toml").write_text('base = "cpu"\nd = [32, 64]\nn = [1, 2]\n')
    args = ["plan", "--budget", "1e18", "--law", str(tmp_path / "law.json"), "--top", "1"]
    assert main([*args, "--space", str(tmp_path / "small.toml")]) == 0
    out = capsys.readouterr().out
    assert f"space {tmp_path / 'small.toml'}" in out and "configs/spaces.py" not in out
