from __future__ import annotations

import bastion.gate


def test_all_lists_exactly_the_public_names() -> None:
    public = {n for n in vars(bastion.gate) if not n.startswith("_")}
    modules = {
        "approvals",
        "audit",
        "checkpoints",
        "default",
        "directory",
        "interface",
        "keys",
        "principals",
        "redact",
        "redacting",
        "secret",
        "wiring",
    }
    assert set(bastion.gate.__all__) == public - modules
    assert "wiring" not in bastion.gate.__all__  # imports settings: reached by its full name
    assert sorted(bastion.gate.__all__) == sorted(set(bastion.gate.__all__))
