from __future__ import annotations

import json

import bastion.demo.support as support
from bastion.demo.support.app import DATABASE_NAME, SCRIPT_PATH, SYSTEM_PROMPT


def test_the_script_path_is_the_packaged_file() -> None:
    assert SCRIPT_PATH.is_absolute()
    assert SCRIPT_PATH.parent.name == "support"
    assert json.loads(SCRIPT_PATH.read_text(encoding="utf-8"))["mode"] == "match"


def test_the_system_prompt_describes_the_support_role() -> None:
    assert "customer-support" in SYSTEM_PROMPT
    assert "never guess" in SYSTEM_PROMPT
    assert len(SYSTEM_PROMPT) < 600
    assert DATABASE_NAME == "support.db"


def test_the_package_exports_its_public_names() -> None:
    public = {name for name in vars(support) if not name.startswith("_")}
    modules = {
        "answers",
        "app",
        "cascade",
        "data",
        "kb",
        "policies",
        "requests",
        "results",
        "tools",
    }
    assert set(support.__all__) == public - modules
