"""The errors a query raises: each message says what is wrong and what to do, for the CLI to print as is."""

from __future__ import annotations


class QueryError(ValueError):
    """A query that cannot be run as asked: bad option values, unknown columns or flag names."""


class UnsafeWhereError(QueryError):
    """A ``--where`` condition that could reach beyond the catalog (statements, table functions, ...)."""
