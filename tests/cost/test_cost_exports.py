from __future__ import annotations

import bastion.cost


def test_all_lists_exactly_the_public_names() -> None:
    public = {n for n in vars(bastion.cost) if not n.startswith("_")}
    modules = {
        "cascade",
        "default",
        "guards",
        "interface",
        "ledger",
        "metered",
        "postgres",
        "pricing",
        "sql",
        "tokens",
        "transactions",
        "usage",
        "windows",
    }
    assert set(bastion.cost.__all__) == public - modules
