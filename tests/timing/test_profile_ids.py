"""Model ids: every model has a short one, the names profiles stored before ids still load, and every profile
committed under results/ predicts the step seconds it predicted before (data/profile_predictions.json: computed
from the same files, shapes and calls as below by the code of commit 2e70e5b, before ids). The quickstart's
profile of then, since replaced by a version-4 one, is kept as data/profile_v3_quickstart.json."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from smallest_loss.configs.errors import UserError
from smallest_loss.timing.models import LEGACY_NAMES, MODELS, get_model
from smallest_loss.timing.profile import load_profile

ROOT = Path(__file__).resolve().parents[2]
EXPECTED = json.loads((Path(__file__).parent / "data" / "profile_predictions.json").read_text())
# Four shapes from a tiny CPU model to a GPT-2-sized one, on one to eight devices.
SHAPES = dict(
    d=[64, 256, 768, 2048],
    n=[2, 4, 12, 24],
    h=[2, 4, 12, 16],
    w=[256, 1024, 3072, 8192],
    s=[128, 256, 1024, 2048],
    v=[256, 4096, 50304, 50304],
    b=[4, 16, 32, 512],
    k=[1, 1, 2, 8],
)


def test_ids_are_short_unique_and_every_old_name_maps_to_its_model():
    ids = [m.id for m in MODELS]
    assert len(set(ids)) == len(ids) and all(re.fullmatch(r"[a-z]+(-[a-z]+)*", i) and len(i) <= 24 for i in ids)
    assert sorted(LEGACY_NAMES.values()) == sorted(ids)  # one old name per model, none lost
    for old, model_id in LEGACY_NAMES.items():
        assert get_model(old) is get_model(model_id) and get_model(old).label == old
    with pytest.raises(UserError, match="unknown time model 'nope'; known: paper, paper-flops"):
        get_model("nope")


def test_every_committed_profile_loads_with_ids():
    paths = sorted(ROOT.glob("results/**/profile.json"))
    assert len(paths) >= len(EXPECTED)
    for path in paths:
        profile = load_profile(path)
        assert get_model(profile.model).id == profile.model
        assert all(get_model(name).id == name for name in profile.alternatives), path


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_committed_profiles_predict_what_they_predicted_before_ids(name):
    expected, profile = EXPECTED[name], load_profile(ROOT / name)
    assert profile.model == LEGACY_NAMES[expected["model"]]
    for variant, seconds in expected["step_seconds"].items():
        activation, norm, tied = variant.split("/")
        predicted = profile.predict_step_seconds(**SHAPES, activation=activation, norm=norm, tied=tied == "True")
        assert predicted.tolist() == pytest.approx(seconds, rel=1e-12), variant
    assert set(profile.alternatives) == {LEGACY_NAMES[old] for old in expected["alternatives"]}
    for old, seconds in expected["alternatives"].items():
        model_id = LEGACY_NAMES[old]
        predicted = profile.predict_with(model_id, profile.alternatives[model_id], **SHAPES)
        assert predicted.tolist() == pytest.approx(seconds, rel=1e-12), old
