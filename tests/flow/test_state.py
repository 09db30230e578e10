import pytest

from bastion.flow.state import ALLOWED, IllegalTransition, check_transition
from bastion.messages import RunStatus

S = RunStatus

EXPECTED_ALLOWED = {
    (S.ADMITTED, S.PLANNING),
    (S.ADMITTED, S.FAILED),
    (S.ADMITTED, S.ABORTED),
    (S.ADMITTED, S.CANCELLED),
    (S.PLANNING, S.RUNNING),
    (S.PLANNING, S.COMPLETED),
    (S.PLANNING, S.FAILED),
    (S.PLANNING, S.ABORTED),
    (S.PLANNING, S.CANCELLED),
    (S.RUNNING, S.PLANNING),
    (S.RUNNING, S.AWAITING_APPROVAL),
    (S.RUNNING, S.COMPLETED),
    (S.RUNNING, S.FAILED),
    (S.RUNNING, S.ABORTED),
    (S.RUNNING, S.CANCELLED),
    (S.AWAITING_APPROVAL, S.RUNNING),
    (S.AWAITING_APPROVAL, S.FAILED),
    (S.AWAITING_APPROVAL, S.ABORTED),
    (S.AWAITING_APPROVAL, S.CANCELLED),
    (S.RUNNING, S.AWAITING_OPERATOR),
    (S.AWAITING_OPERATOR, S.RUNNING),
    (S.AWAITING_OPERATOR, S.FAILED),
    (S.AWAITING_OPERATOR, S.ABORTED),
    (S.AWAITING_OPERATOR, S.CANCELLED),
}


def test_every_status_has_a_rule():
    assert set(ALLOWED) == set(RunStatus)


@pytest.mark.parametrize("old", list(RunStatus))
@pytest.mark.parametrize("new", list(RunStatus))
def test_each_transition_is_allowed_or_refused_as_the_state_machine_says(old, new):
    if (old, new) in EXPECTED_ALLOWED:
        check_transition(old, new)
    else:
        with pytest.raises(IllegalTransition, match=f"from {old.value} to {new.value}"):
            check_transition(old, new)


@pytest.mark.parametrize("status", [s for s in RunStatus if s.is_terminal])
def test_terminal_statuses_have_no_way_out(status):
    assert ALLOWED[status] == frozenset()


def test_terminal_set():
    assert {s for s in RunStatus if s.is_terminal} == {
        S.COMPLETED,
        S.FAILED,
        S.ABORTED,
        S.CANCELLED,
    }
