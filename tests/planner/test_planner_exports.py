from __future__ import annotations

import bastion.planner


def test_all_lists_exactly_the_public_names() -> None:
    public = {n for n in vars(bastion.planner) if not n.startswith("_")}
    modules = {"default", "interface", "plan_schema", "prompt", "references", "repair"}
    assert set(bastion.planner.__all__) == public - modules
    assert sorted(bastion.planner.__all__) == sorted(set(bastion.planner.__all__))
