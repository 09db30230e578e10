from __future__ import annotations

import bastion.recovery


def test_all_lists_exactly_the_public_names() -> None:
    public = {n for n in vars(bastion.recovery) if not n.startswith("_")}
    modules = {"default", "interface", "policy"}
    assert set(bastion.recovery.__all__) == public - modules
    assert sorted(bastion.recovery.__all__) == sorted(set(bastion.recovery.__all__))
