"""Typed configs: validation messages name the field; --set overrides are parsed against field types."""

from __future__ import annotations

import pytest
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.models import PRESETS, get_preset
from smallest_loss.configs.overrides import apply_overrides
from smallest_loss.configs.schema import ModelConfig, RunConfig, TrainConfig


def test_presets_are_valid_and_round_trip():
    for name, cfg in PRESETS.items():
        assert RunConfig.from_dict(cfg.to_dict()) == cfg, name


def test_override_types():
    cfg = apply_overrides(get_preset("tiny"), ["model.d=256", "train.lr=1e-3", "model.tied_embeddings=false",
                                              "train.steps=None", "train.tokens=1e6", "model.norm=layernorm"])
    assert (cfg.model.d, cfg.train.lr, cfg.model.tied_embeddings) == (256, 1e-3, False)
    assert cfg.train.steps is None and cfg.train.tokens == 1_000_000
    assert cfg.total_steps == -(-1_000_000 // (cfg.train.batch_size * cfg.model.s))


@pytest.mark.parametrize(
    "assignment,message",
    [
        ("model.zz=1", "unknown key 'zz'"),
        ("nope.d=1", "unknown key 'nope'"),
        ("model.d=abc", "expected an integer"),
        ("model.d=1.5", "expected an integer"),
        ("train.lr=x", "expected a number"),
        ("model.norm=batchnorm", "choose one of"),
        ("model.tied_embeddings=maybe", "expected true or false"),
        ("model=3", "is a section"),
        ("model.d", "expected section.field=value"),
        ("model.d=102", "model.d=102 is not divisible by model.h=4"),
        ("model.d=100", "head size d/h = 25 must be even"),
        ("train.lr=-1", "train.lr=-1.0 must be positive"),
        ("model.n=0", "model.n=0 must be positive"),
    ],
)
def test_bad_overrides_name_the_problem(assignment, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(".", r"\.")):
        apply_overrides(get_preset("tiny"), [assignment])


def test_validation_messages():
    with pytest.raises(UserError, match="model.d=100 is not divisible by model.h=3"):
        ModelConfig(d=100, h=3)
    with pytest.raises(UserError, match="exactly one of train.steps and train.tokens"):
        TrainConfig(steps=None, tokens=None)
    with pytest.raises(UserError, match="unknown preset 'huge'"):
        get_preset("huge")
