"""The Execution Sandbox: runs one tool call in isolation and never raises.

`TieredSandbox` is the default; `BreakerSandbox` wraps any sandbox with a breaker per tool.
"""

from bastion.sandbox.breaker import BreakerSandbox
from bastion.sandbox.default import TieredSandbox
from bastion.sandbox.interface import ExecutionSandbox

__all__ = ["BreakerSandbox", "ExecutionSandbox", "TieredSandbox"]
