"""Exceptions of the restore room.

Every error that concerns one backup carries the backup it belongs to and, when there is
one, the object inside it, so a line in a report of 41 restores says which one broke.
"""

from __future__ import annotations


class RestoreError(Exception):
    """A restore that cannot go on; `backup` and `object_name` say where."""

    def __init__(self, message: str, *, backup: str = "", object_name: str = "") -> None:
        self.reason = message
        self.backup = backup
        self.object_name = object_name
        super().__init__(self._render())

    def _render(self) -> str:
        where = []
        if self.backup:
            where.append(f"backup {self.backup}")
        if self.object_name:
            where.append(f"object {self.object_name}")
        return f"{', '.join(where)}: {self.reason}" if where else self.reason

    def located(self, *, backup: str = "", object_name: str = "") -> "RestoreError":
        """Fill in the location if the raiser did not know it."""
        self.backup = self.backup or backup
        self.object_name = self.object_name or object_name
        self.args = (self._render(),)
        return self


class BackupFormatError(RestoreError):
    """The `_metadata` or `_sha256file` object is missing, unparsable or inconsistent."""


class MissingObjectError(RestoreError):
    """A data object named in the metadata is not in the store."""


class CorruptObjectError(RestoreError):
    """A data object does not decompress, is truncated, or fails its md5/sha256 check."""


class UnknownCompressionError(RestoreError):
    """The metadata names a compression this restore engine cannot decode."""


class UnsupportedBackupError(RestoreError):
    """A valid Cinder backup this engine does not restore (yet), e.g. an incremental one."""


class TargetError(RestoreError):
    """The restore target is unusable: exists and is not empty (without force), or fails."""


class BudgetTooSmallError(RestoreError):
    """One restore's minimum working set does not fit in the whole memory budget."""


class RestoreCancelled(RestoreError):
    """The restore was stopped (KeyboardInterrupt or cancel()) before it finished."""
