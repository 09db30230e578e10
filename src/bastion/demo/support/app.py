"""The support demo as an app: `build` wires the shop's tools, people and policies into Bastion.

This is what an app on Bastion looks like: a module that builds an `AgentSystem` from settings and
its own parts. The shop database lives in the data directory beside Bastion's own; the planner's
default model is the scripted one reading `script.json`, so the demo runs with no model at all,
and any configured model (``BASTION_MODEL__NAME``) takes its place.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

from bastion.demo.support.answers import compose_answer
from bastion.demo.support.data import ensure_database
from bastion.demo.support.policies import PRINCIPALS, make_policies
from bastion.demo.support.tools import make_tools
from bastion.settings import Settings

if TYPE_CHECKING:
    from bastion.system import AgentSystem

SYSTEM_PROMPT = (
    "You are the customer-support assistant of a small online coffee-equipment shop. You help "
    "customers with their orders (status, tracking, refunds) and with questions the help centre "
    "answers, and you hand a conversation to a person on the support team when the customer asks "
    "for one or when no tool can do what they need. Use the order numbers the customer gives; "
    "never guess one."
)

#: The scripted model's rules for the demo requests, shipped inside the package.
SCRIPT_PATH = Path(str(files("bastion.demo.support").joinpath("script.json")))

#: The shop database's file name, inside the settings' data directory.
DATABASE_NAME = "support.db"


def build(settings: Settings) -> AgentSystem:
    """The support agent: shop tools, the demo's principals and policies, the customer answer.

    Raises:
        ConfigError: the shop database is unusable, or the system cannot be built from `settings`.
    """
    # Imported here so that the shop's data, tools and policies load without the runtime's
    # storage and model stack (tests, the benchmark's fixtures).
    from bastion.system import AgentSystem

    db = ensure_database(settings.data_dir / DATABASE_NAME)
    return AgentSystem.from_settings(
        settings,
        tools=make_tools(db),
        principals=PRINCIPALS,
        policies=make_policies(db),
        answer=compose_answer,
        system_prompt=SYSTEM_PROMPT,
        default_model=f"scripted:{SCRIPT_PATH}",
    )
