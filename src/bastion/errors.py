"""Bastion's exception tree: one root, names that say whose fault it is.

```
BastionError
├── ConfigError        a mistake of whoever built the app: raised at build time, never mid-run
├── AdmissionError     the run may not start (or go on)
│   ├── NotAuthenticated
│   ├── PermissionDenied
│   ├── BudgetExceeded
│   │   ├── PriceUnknown       (the model has no known price: fail closed)
│   │   └── RunLimitReached    (a runaway guard: model calls, or a loop of identical calls)
│   └── RateLimited
├── ModelError         any model provider
│   ├── ModelRateLimited   (retry_after_s)
│   ├── ModelUnavailable   (5xx, connection refused)
│   ├── ModelTimeout
│   ├── ModelBadRequest    (our request was wrong: never retried, never opens a breaker)
│   └── ModelRefused       (the provider declined: content filter, auth)
├── ToolError          UnknownTool, InvalidToolArgs, ToolTimeout, ToolCrashed, TransientToolError
├── PlanError          no valid plan within the repair budget
├── RunNotRecorded     a durable run's first write failed for good (the workflow fails with it)
├── Superseded         another execution of a durable run took it over: this one stops
├── CircuitOpen(name, retry_at)
└── ApprovalError      a human approval cannot be given or used (approval_id)
    ├── UnknownApproval, ApprovalAlreadyDecided, ApprovalExpired
    └── SelfApproval, NotAnApprover, ApprovalMismatch
```

Outcomes that somebody planned for are values (`ToolOutcome`, `Verdict`, `RecoveryAction`); these
exceptions are for the edges: a component that cannot go on raises one, and `AgentSystem.run` turns
whatever is left into a terminal run with a user-facing message. `str(exc)` speaks to operators;
`user_message` (where present) to the end user.
"""

from __future__ import annotations


class BastionError(Exception):
    """Root of every error Bastion raises on purpose."""

    #: A sentence for the end user; operators read ``str(exc)``.
    user_message: str = "Sorry, something went wrong while handling your request."


class ConfigError(BastionError):
    """The app or its settings are wrong: fix the configuration, then start again."""


class AdmissionError(BastionError):
    """The run may not start, or may not go on."""


class NotAuthenticated(AdmissionError):
    """The caller could not be identified."""

    user_message = "You could not be identified. Check your credentials and try again."


class PermissionDenied(AdmissionError):
    """The caller is known but may not do this."""

    user_message = "You are not allowed to do that."


class BudgetExceeded(AdmissionError):
    """A budget would be overspent by the next call."""

    user_message = "This request ran out of budget before it could finish."


class PriceUnknown(BudgetExceeded):
    """The model has no known price, so no budget can bound its calls: it is never called."""

    user_message = (
        "This request cannot be served right now: the model it needs has no price configured."
    )


class RunLimitReached(BudgetExceeded):
    """A runaway guard stopped the run: too many model calls, or the same call over and over."""

    user_message = (
        "Sorry, this request was stopped because it kept going without finishing "
        "(too many attempts or the same action repeated)."
    )


class RateLimited(AdmissionError):
    """Too many requests: try again after ``retry_after_s``."""

    user_message = "Too many requests right now. Please try again shortly."

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ModelError(BastionError):
    """A model provider failed. Subclasses say how; ``transient`` says whether a retry may help."""

    transient: bool = False
    user_message = "The language model could not be reached. Please try again later."

    def __init__(self, message: str, *, model: str | None = None) -> None:
        super().__init__(message)
        self.model = model


class ModelRateLimited(ModelError):
    """The provider asked us to slow down; ``retry_after_s`` is its hint, parsed once."""

    transient = True
    user_message = "The language model is busy right now. Please try again shortly."

    def __init__(
        self, message: str, *, model: str | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message, model=model)
        self.retry_after_s = retry_after_s


class ModelUnavailable(ModelError):
    """The provider is down or unreachable (5xx, connection refused)."""

    transient = True


class ModelTimeout(ModelError):
    """The provider did not answer in time."""

    transient = True


class ModelBadRequest(ModelError):
    """The provider rejected our request as malformed: a bug or a config mistake, never retried."""


class ModelRefused(ModelError):
    """The provider refused to serve us (authentication, permission, content policy)."""

    user_message = "The language model refused this request."


class ToolError(BastionError):
    """A tool could not be used as planned."""

    def __init__(self, message: str, *, tool_name: str | None = None) -> None:
        super().__init__(message)
        self.tool_name = tool_name


class UnknownTool(ToolError):
    """The plan names a tool that is not registered (or not visible to this caller)."""


class InvalidToolArgs(ToolError):
    """The plan's args for a tool fail that tool's schema."""


class ToolTimeout(ToolError):
    """The tool did not finish before its deadline."""


class ToolCrashed(ToolError):
    """The tool raised or its process died."""


class TransientToolError(ToolError):
    """Raised by a tool to say "this may work if you try again" (an upstream 503, a lock timeout).

    The sandbox turns it into a transient failure, which the Recovery Handler may retry; any other
    exception a tool raises is a permanent failure of that call.
    """


class PlanError(BastionError):
    """No valid plan could be had from the model within the repair budget."""

    user_message = "Sorry, I could not work out how to handle that request. Please rephrase it."


class RunNotRecorded(BastionError):
    """A run could not be recorded when it began, so it must not go on.

    In process the caller gets a failed response; a durable run's workflow fails with this error
    instead of completing with nothing stored of it (DBOS keeps it as ``ERROR``, with the reason).
    """


class Superseded(BastionError):
    """This execution of a durable run was superseded by another: it stops, writing nothing more.

    Raised by a write the other execution already made (a worker presumed dead and taken over,
    still running). The run loop lets it through instead of recording a failure: the run is the
    other execution's to finish, and whoever waits for it gets that execution's answer.
    """

    user_message = "This request is being handled by another worker."


class CircuitOpen(BastionError):
    """Calls to ``name`` are suspended until ``retry_at`` (on the clock's monotonic scale)."""

    user_message = "A service this request needs is failing right now. Please try again later."

    def __init__(self, name: str, retry_at: float) -> None:
        super().__init__(f"circuit {name!r} is open until t={retry_at:.3f}")
        self.name = name
        self.retry_at = retry_at


class ApprovalError(BastionError):
    """A human approval cannot be given or used; ``approval_id`` names it."""

    user_message = "This approval cannot be used."

    def __init__(self, message: str, *, approval_id: str = "") -> None:
        super().__init__(message)
        self.approval_id = approval_id


class UnknownApproval(ApprovalError):
    """No approval has this id."""


class ApprovalAlreadyDecided(ApprovalError):
    """The approval was already approved, denied, expired or used: a decision is final."""


class ApprovalExpired(ApprovalError):
    """The approval's time ran out before it was decided or used."""


class SelfApproval(ApprovalError):
    """The principal who asked for the call may not approve it."""


class NotAnApprover(ApprovalError):
    """The principal lacks the approver role."""


class ApprovalMismatch(ApprovalError):
    """The approval is for another call (tool or args differ): it was tampered with or misused."""
