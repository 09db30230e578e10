"""Bastion's exception tree: one root, names that say whose fault it is.

```
BastionError
├── ConfigError        a mistake of whoever built the app: raised at build time, never mid-run
├── AdmissionError     the run may not start (or go on)
│   ├── NotAuthenticated
│   ├── PermissionDenied
│   ├── BudgetExceeded
│   └── RateLimited
├── ModelError         any model provider
│   ├── ModelRateLimited   (retry_after_s)
│   ├── ModelUnavailable   (5xx, connection refused)
│   ├── ModelTimeout
│   ├── ModelBadRequest    (our request was wrong: never retried, never opens a breaker)
│   └── ModelRefused       (the provider declined: content filter, auth)
├── ToolError          UnknownTool, InvalidToolArgs, ToolTimeout, ToolCrashed, TransientToolError
├── PlanError          no valid plan within the repair budget
└── CircuitOpen(name, retry_at)
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


class CircuitOpen(BastionError):
    """Calls to ``name`` are suspended until ``retry_at`` (on the clock's monotonic scale)."""

    user_message = "A service this request needs is failing right now. Please try again later."

    def __init__(self, name: str, retry_at: float) -> None:
        super().__init__(f"circuit {name!r} is open until t={retry_at:.3f}")
        self.name = name
        self.retry_at = retry_at
