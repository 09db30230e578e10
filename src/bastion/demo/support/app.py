"""The support demo as an app: `build` wires the shop's tools, people and policies into Bastion.

This is what an app on Bastion looks like: a module that builds an `AgentSystem` from settings and
its own parts. The shop database lives in the data directory beside Bastion's own. The planner's
model is, in order: the configured one (``BASTION_MODEL__NAME``, ``--model``); the embedded
``local:qwen2.5-1.5b`` when the ``local`` extra and its weights are installed (`make demo` installs
both); else the scripted model reading `script.json`, so that the demo runs with no model at all.
`choose_model` says which, and why.

The planner's prompt (`PLANNER_PROMPT`) is written for small models: the role in a few lines,
four rules of thumb, then worked examples whose ids and amounts are obviously made up (Z0000,
12.34), the request last (the planner puts it there). Small models follow examples more than
rules, and copy their values into real plans; the guards in `policies` refuse such copies,
whatever the model planned. The role and examples come first and are the same for every caller,
so the engine reuses their KV prefix across callers whose tool lists differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

from bastion.demo.support.answers import compose_answer
from bastion.demo.support.data import ensure_database
from bastion.demo.support.policies import PRINCIPALS, Conversations, is_staff, make_policies
from bastion.demo.support.tools import make_tools
from bastion.memory.tools import MemoryTools
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

#: Worked examples for small models. Their ids and amounts are made up on purpose (no order Z0000
#: exists), so that a copied value is caught by the guards instead of acting on a real order.
EXAMPLES = """How to choose the steps:
- The request names an order number: lookup_order, and track_shipment for where, when or shipped.
- Otherwise a question (how do I, can I, do you, how long, which, is there): search_kb.
- escalate_to_human only when the user asks for a person, a human or a manager.
- A refund of an amount on an order: issue_refund if it is listed, else escalate_to_human.
- The user tells a lasting preference (how to contact them, a language): remember it.
- When you escalate and we know how the user wants to be contacted, set contact to it.
Examples (the order Z0000 and the amount 12.34 are made up: never use them):
Request: Where is my order Z0000?
{"reasoning": "An order number: look it up and track it.", "steps": [{"description": "Look up \
order Z0000", "tool_name": "lookup_order", "tool_args": {"order_id": "Z0000"}}, {"description": \
"Track order Z0000", "tool_name": "track_shipment", "tool_args": {"order_id": "Z0000"}}]}
Request: Do you deliver on Saturdays?
{"reasoning": "A question: the help centre answers it.", "steps": [{"description": "Search the \
help centre", "tool_name": "search_kb", "tool_args": {"query": "delivery Saturday"}}]}
Request: What is in order Z0000?
{"reasoning": "An order number: look it up.", "steps": [{"description": "Look up order Z0000", \
"tool_name": "lookup_order", "tool_args": {"order_id": "Z0000"}}]}
Request: How long do returns take?
{"reasoning": "A question: the help centre answers it.", "steps": [{"description": "Search the \
help centre", "tool_name": "search_kb", "tool_args": {"query": "returns time"}}]}
Request: I want to talk to a human.
{"reasoning": "The user asks for a person.", "steps": [{"description": "Hand over to the support \
team", "tool_name": "escalate_to_human", "tool_args": {"summary": "The customer asked for a \
person.", "priority": "normal"}}]}
Request: From now on please write to me in French.
{"reasoning": "A lasting preference: remember it.", "steps": [{"description": "Remember the \
language", "tool_name": "remember", "tool_args": {"fact": "Wants to be written to in French"}}]}
Request: Refund 12.34 on order Z0000, the lid was missing.
{"reasoning": "Refund the amount asked on that order.", "steps": [{"description": "Refund 12.34 \
on order Z0000", "tool_name": "issue_refund", "tool_args": {"order_id": "Z0000", "amount": \
"12.34", "reason": "The lid was missing."}}]}
When a step was denied, do not plan it again."""

#: The planner's role text: the agent's role, then the examples.
PLANNER_PROMPT = f"{SYSTEM_PROMPT}\n\n{EXAMPLES}"

#: The scripted model's rules for the demo requests, shipped inside the package.
SCRIPT_PATH = Path(str(files("bastion.demo.support").joinpath("script.json")))

#: The shop database's file name, inside the settings' data directory.
DATABASE_NAME = "support.db"


#: The demo's model when none is configured and the local one is installed.
LOCAL_MODEL = "local:qwen2.5-1.5b"


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelChoice:
    """The model the demo plans with, and why that one."""

    name: str
    why: str


def choose_model(settings: Settings) -> ModelChoice:
    """The configured model, else the local default if installed, else the scripted model.

    Checks only that the engine and the weight packages are installed (milliseconds); their
    sha256 is verified when the model loads, which refuses damaged weights.
    """
    from bastion.models import weights

    if settings.model.name:
        return ModelChoice(
            name=settings.model.name, why="configured (--model or BASTION_MODEL__NAME)"
        )
    spec = weights.CATALOG[LOCAL_MODEL.removeprefix("local:")]
    scripted = f"scripted:{SCRIPT_PATH}"
    if not weights.engine_installed():
        return ModelChoice(
            name=scripted,
            why=f"the local model's engine is not installed ({weights.ENGINE_INSTALL}, or make"
            " demo): plans come from a script",
        )
    missing = weights.missing_parts(spec)
    if missing:
        return ModelChoice(
            name=scripted,
            why=f"the weights of {LOCAL_MODEL} are not installed ({spec.install_command}, or"
            " make demo): plans come from a script",
        )
    return ModelChoice(
        name=LOCAL_MODEL, why=f"embedded {spec.title}, installed, running on this machine"
    )


def build(settings: Settings) -> AgentSystem:
    """The support agent: shop tools, the demo's principals and policies, the customer answer.

    Raises:
        ConfigError: the shop database is unusable, or the system cannot be built from `settings`
            (a local model whose weights fail their sha256 among them).
    """
    # Imported here so that the shop's data, tools and policies load without the runtime's
    # storage and model stack (tests, the benchmark's fixtures).
    from bastion.system import AgentSystem

    db = ensure_database(settings.data_dir / DATABASE_NAME)
    conversations = Conversations()
    memory_tools = MemoryTools()  # `remember`: a customer's lasting preferences, across sessions
    system = AgentSystem.from_settings(
        settings,
        tools=[*make_tools(db), *memory_tools.tools()],
        principals=PRINCIPALS,
        policies=make_policies(db, conversations=conversations),
        answer=compose_answer,
        system_prompt=PLANNER_PROMPT,
        default_model=choose_model(settings).name,
        may_see_others=is_staff,
    )
    conversations.bind(system.components.memory)
    memory_tools.bind(system.components.memory)
    return system
