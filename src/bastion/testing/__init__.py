"""Shipped test doubles: a clock that moves when told, a scripted model, a fake OpenAI server.

Apps built on Bastion test their agents with these, as Bastion's own tests do.
"""

from bastion.models.scripted import ScriptedModel, UnexpectedModelCall
from bastion.testing.clock import FakeClock
from bastion.testing.fake_openai import FakeOpenAIServer

__all__ = ["FakeClock", "FakeOpenAIServer", "ScriptedModel", "UnexpectedModelCall"]
