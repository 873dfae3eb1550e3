"""The Keras 3 recipe: a KerasHub transformer's diff, signed, applied by the device, evaluated by LiteRT."""
import json

import pytest

from recipes.text_commands import run as text_commands

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("method", ["sparse", "hash"])
def test_the_text_commands_recipe_ships_a_diff_the_device_applies_bit_exact(tmp_path, method):
    result = text_commands.run(str(tmp_path), method=method, compression=10.0, steps=80, count=800)
    assert json.load(open(tmp_path / "results.json")) == json.loads(json.dumps(result))
    assert result["device_weights_digest_is_fold"] and result["applied"] == "applied"
    assert result["diff_bytes"] <= result["budget_bytes"]
    accuracy = result["accuracy"]
    assert accuracy["Diff (device, LiteRT)"] == pytest.approx(accuracy["Diff (Keras, folded)"], abs=0.01)
    # generation 0 never heard of heating; the diff taught the device its two intents
    assert accuracy["Diff on heating (device)"] > 0.5 and accuracy["BL_inf on heating"] < 0.2
