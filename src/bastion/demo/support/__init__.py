"""The worked example: a customer-support agent for a small shop (DESIGN.md §5).

Orders, parcels, refunds and escalation tickets live in a real SQLite database (`data`); a help
centre of twelve articles is searchable (`kb`); five typed tools act on them (`tools`), guarded by
the demo's principals and argument policies (`policies`); the answer is worded from the tools'
results alone (`answers`). `app.build` wires it all into an `AgentSystem`; `requests` and
``script.json`` are the demo's requests and the scripted model's plans for them. `cascade` runs the
demo on a model cascade and reports its saving against always-strong (``bastion demo --cascade``).
"""

from bastion.demo.support.answers import compose_answer
from bastion.demo.support.app import SCRIPT_PATH, SYSTEM_PROMPT, build
from bastion.demo.support.data import ensure_database, reset_database
from bastion.demo.support.kb import ARTICLES, Article, search
from bastion.demo.support.policies import PRINCIPALS, REFUND_CAP, make_policies
from bastion.demo.support.requests import DEMO_REQUESTS, DemoRequest
from bastion.demo.support.tools import make_tools

__all__ = [
    "ARTICLES",
    "DEMO_REQUESTS",
    "PRINCIPALS",
    "REFUND_CAP",
    "SCRIPT_PATH",
    "SYSTEM_PROMPT",
    "Article",
    "DemoRequest",
    "build",
    "compose_answer",
    "ensure_database",
    "make_policies",
    "make_tools",
    "reset_database",
    "search",
]
