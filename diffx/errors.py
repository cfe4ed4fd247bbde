"""Error types that carry *where* the problem is, so a user can fix the input without a debugger."""

from __future__ import annotations


class DiffxError(Exception):
    """Base class for every error diffx raises on purpose."""


class ConfigError(DiffxError):
    """A params file has an unknown key, a wrong type or an impossible value."""


class DataError(DiffxError):
    """Input data is malformed.

    The message always names the file (and line or field when there is one) and what was expected,
    because the user has to find the bad record among thousands.
    """

    def __init__(self, source: str, problem: str, *, line: int | None = None, field: str | None = None):
        self.source = str(source)
        self.problem = problem
        self.line = line
        self.field = field
        where = self.source
        if line is not None:
            where += f":{line}"
        if field is not None:
            where += f" [{field}]"
        super().__init__(f"{where}: {problem}")


class ShardError(DiffxError):
    """A shard set does not match its manifest (truncated, altered, missing or extra files)."""
