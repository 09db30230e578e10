import bastion


def test_all_lists_exactly_the_public_names():
    public = {name for name in dir(bastion) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(bastion, name)).__name__ == "module"}
    assert set(bastion.__all__) == public - modules


def test_seed_public_names_are_importable_from_the_top():
    for name in [
        "AgentRequest",
        "PlanStep",
        "AgentPlan",
        "AgentResponse",
        "StepStatus",
        "Planner",
        "ToolRouter",
        "ExecutionSandbox",
        "CircuitBreaker",
        "AgentSystem",
    ]:
        assert name in bastion.__all__
