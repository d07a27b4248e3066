"""Function keys, enforced where Azure enforces them.

Core Tools lets every request through; this stack does not, so that admin-level endpoints (certificate
revocation) are protected locally too. As in Azure: a key arrives as `?code=` or `x-functions-key`;
`function` level takes the function key or the master key, `admin` level (and /admin/*) the master key only,
`anonymous` needs nothing. Keys live in the stack's state (local.secrets) and are random per machine.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from local.secrets import stack_secret

# Names under which local.secrets keeps the keys (the values are random per machine).
FUNCTION_KEY_SECRET = "function-key-default"
MASTER_KEY_SECRET = "function-master-key"


@dataclass(frozen=True)
class HostKeys:
    function_key: str
    master_key: str

    @classmethod
    def from_state_dir(cls, state_dir: Path | str) -> HostKeys:
        """The stack's keys, created on first use and shared by every process of the stack."""
        return cls(stack_secret(Path(state_dir), FUNCTION_KEY_SECRET), stack_secret(Path(state_dir), MASTER_KEY_SECRET))

    def allows(self, auth_level: str, presented: str | None) -> bool:
        level = auth_level.lower()
        if level == "anonymous":
            return True
        if not presented:
            return False
        if _same(presented, self.master_key):
            return True
        return level == "function" and _same(presented, self.function_key)


def presented_key(query: Mapping[str, str], headers: Mapping[str, str]) -> str | None:
    """The key a caller sent: header x-functions-key, else query parameter code."""
    return headers.get("x-functions-key") or query.get("code")


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
