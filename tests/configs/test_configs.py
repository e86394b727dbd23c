"""Typed configs: validation messages name the field; --set overrides are parsed against field types."""

from __future__ import annotations

import re

import pytest
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.models import PRESETS, get_preset
from smallest_loss.configs.overrides import apply_overrides
from smallest_loss.configs.schema import ModelConfig, RunConfig, TrainConfig


def test_presets_are_valid_and_round_trip():
    for name, cfg in PRESETS.items():
        assert RunConfig.from_dict(cfg.to_dict()) == cfg, name


def test_override_types():
    cfg = apply_overrides(
        get_preset("tiny"),
        [
            "model.d=256",
            "train.lr=1e-3",
            "model.tied_embeddings=false",
            "train.steps=None",
            "train.tokens=1e6",
            "model.norm=layernorm",
        ],
    )
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
        ("model.d=102", "model.d=102 is not divisible by model.h=4; set model.h too, e.g. --set model.h=3"),
        (
            "model.d=100",
            "head size d/h = 25 must be even (rotary embeddings rotate pairs); set model.h too, "
            "e.g. --set model.h=5 (head size 20)",
        ),
        ("train.lr=-1", "train.lr=-1.0 must be positive"),
        ("model.n=0", "model.n=0 must be positive"),
    ],
)
def test_bad_overrides_name_the_problem(assignment, message):
    with pytest.raises(UserError, match=re.escape(message)):
        apply_overrides(get_preset("tiny"), [assignment])


def test_mlp_width_follows_the_model_width_unless_set():
    tiny = get_preset("tiny")
    assert tiny.model.w == 4 * tiny.model.d
    assert apply_overrides(tiny, ["model.d=16384"]).model.w == 65536
    assert apply_overrides(tiny, ["model.mlp_ratio=2.5"]).model.w == 320
    assert apply_overrides(tiny, ["model.d=256", "model.w=100"]).model.w == 100  # explicit in the same command
    assert apply_overrides(tiny, ["model.w=100"]).model.w == 100
    assert apply_overrides(apply_overrides(tiny, ["model.w=100"]), ["model.n=3"]).model.w == 100  # d unchanged
    assert ModelConfig(d=48, mlp_ratio=3.0).w == ModelConfig(d=48, w=144).w == 144
    with pytest.raises(UserError, match="model.mlp_ratio=0.0 must be positive"):
        apply_overrides(tiny, ["model.mlp_ratio=0"])


def test_validation_messages():
    with pytest.raises(UserError, match="model.d=100 is not divisible by model.h=3"):
        ModelConfig(d=100, h=3)
    with pytest.raises(UserError, match="exactly one of train.steps and train.tokens"):
        TrainConfig(steps=None, tokens=None)
    with pytest.raises(UserError, match="unknown preset 'huge'"):
        get_preset("huge")
