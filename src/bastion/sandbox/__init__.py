"""The Execution Sandbox: runs one tool call in isolation and never raises.

`TieredSandbox` is the default; `BreakerSandbox` wraps any sandbox with a breaker per tool. The
tiers: `inline` (the event loop), `process` (a child per call: `launch`, `worker`, `pool`,
`process`, `cgroups`, `child`) and `os` (the same inside bubblewrap: `bwrap`). What this machine
supports is `capabilities` (and ``bastion doctor``); how a call ended becomes an outcome in
`outcomes`.
"""

from bastion.sandbox.breaker import BreakerSandbox
from bastion.sandbox.default import TieredSandbox
from bastion.sandbox.interface import ExecutionSandbox

__all__ = ["BreakerSandbox", "ExecutionSandbox", "TieredSandbox"]
