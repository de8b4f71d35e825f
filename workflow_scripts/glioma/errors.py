"""Errors that name the patient, the column and the file a problem came from."""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """A problem with a user's input: its message says which patient, column and file."""

    def __init__(
        self,
        message: str,
        *,
        patient: str | None = None,
        column: str | None = None,
        path: str | Path | None = None,
        row: int | None = None,
    ) -> None:
        self.reason = message
        self.patient = patient
        self.column = column
        self.path = None if path is None else str(path)
        self.row = row
        where = []
        if row is not None:
            where.append(f"row {row}")
        if patient is not None:
            where.append(f"patient {patient!r}")
        if column is not None:
            where.append(f"column {column!r}")
        if path is not None:
            where.append(f"file {str(path)!r}")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)

    def with_context(
        self,
        *,
        patient: str | None = None,
        column: str | None = None,
        path: str | Path | None = None,
        row: int | None = None,
    ) -> InputError:
        """Return a copy of this error with the given context filled in where it was missing."""
        return InputError(
            self.reason,
            patient=self.patient if self.patient is not None else patient,
            column=self.column if self.column is not None else column,
            path=self.path if self.path is not None else path,
            row=self.row if self.row is not None else row,
        )
