from __future__ import annotations

import bastion.gate


def test_all_lists_exactly_the_public_names() -> None:
    public = {n for n in vars(bastion.gate) if not n.startswith("_")}
    modules = {"audit", "default", "interface", "principals"}
    assert set(bastion.gate.__all__) == public - modules
    assert sorted(bastion.gate.__all__) == sorted(set(bastion.gate.__all__))
