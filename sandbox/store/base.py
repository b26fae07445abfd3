"""The store interface every backend implements."""

from __future__ import annotations

from typing import Any, Protocol


class Store(Protocol):
    """Function registry (more state joins it with the invocation models)."""

    def put_function(self, name: str, record: dict[str, Any]) -> None:
        """Creates or replaces a function's configuration record."""

    def get_function(self, name: str) -> dict[str, Any] | None:
        """The record, or None when no such function exists."""

    def delete_function(self, name: str) -> bool:
        """Removes the function; returns whether it existed."""

    def list_functions(self) -> list[dict[str, Any]]:
        """All records, ordered by name."""

    # -- permissions (sandbox/iam): users, roles, organizations, function policies ----
    def put_iam_record(self, kind: str, key: str, record: dict[str, Any]) -> None:
        """Creates or replaces the IAM record ``key`` of ``kind``."""

    def get_iam_record(self, kind: str, key: str) -> dict[str, Any] | None:
        """The record, or None."""

    def delete_iam_record(self, kind: str, key: str) -> bool:
        """Removes the record; returns whether it existed."""

    def list_iam_records(self, kind: str) -> list[dict[str, Any]]:
        """All records of ``kind``, ordered by key."""

    def close(self) -> None:
        """Releases the backend's resources."""
