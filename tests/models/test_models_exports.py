import inspect

import bastion.models
import bastion.testing.scripted
from bastion.models.scripted import ScriptedModel


def test_all_lists_exactly_the_public_names() -> None:
    public = {
        name
        for name, value in vars(bastion.models).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }

    assert set(bastion.models.__all__) == public


def test_testing_reexports_the_scripted_model() -> None:
    assert bastion.testing.scripted.ScriptedModel is ScriptedModel
    assert set(bastion.testing.scripted.__all__) == {
        "ScriptItem",
        "ScriptedModel",
        "UnexpectedModelCall",
    }
