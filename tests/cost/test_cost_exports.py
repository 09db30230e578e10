from __future__ import annotations

import bastion.cost


def test_all_lists_exactly_the_public_names() -> None:
    public = {n for n in vars(bastion.cost) if not n.startswith("_")}
    modules = {"default", "interface", "ledger", "metered", "pricing", "tokens"}
    assert set(bastion.cost.__all__) == public - modules
