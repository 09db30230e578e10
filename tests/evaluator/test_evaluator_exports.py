from __future__ import annotations

import bastion.evaluator


def test_all_lists_exactly_the_public_names() -> None:
    public = {n for n in vars(bastion.evaluator) if not n.startswith("_")}
    modules = {"answer", "checks", "default", "interface", "judge"}
    assert set(bastion.evaluator.__all__) == public - modules
    assert sorted(bastion.evaluator.__all__) == sorted(set(bastion.evaluator.__all__))
