"""`ScriptedModel`, re-exported where the other shipped test doubles live.

It is defined in `bastion.models.scripted` because the CLI and the demo load it by name
(``scripted:<file>``) as a real model, not only as a test double.
"""

from bastion.models.scripted import ScriptedModel, ScriptItem, UnexpectedModelCall

__all__ = ["ScriptItem", "ScriptedModel", "UnexpectedModelCall"]
