"""A local study's SQLite file, and what to tell the user when it or its disk fails.

Three readers open a study.db a user names or left behind: `rheostat run` (its own
work folder), `rheostat status`, and a warm start (`fromStudy`). Handed a file that
is no database (a CSV, a corrupt copy), SQLAlchemy raised "file is not a database"
from deep inside Optuna, and a full disk surfaced as Optuna's StorageInternalError:
tracebacks where a sentence belongs. This module turns both into messages.
"""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

import optuna
import sqlalchemy.exc

# The first 16 bytes of every SQLite 3 database file.
SQLITE_HEADER = b"SQLite format 3\x00"

# What a full disk (or quota) is called by the OS and by SQLite.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class StudyFileError(Exception):
    """A file that should hold an Optuna study does not; the message completes
    "<path> ..." (e.g. "is not a study database (not an SQLite file)")."""


def open_storage(path: Path) -> optuna.storages.RDBStorage:
    """Optuna's storage on the SQLite file `path` (created when absent).

    Raises :class:`StudyFileError` when the file is not a SQLite database or SQLite
    cannot read it. A file that exists is checked by its header first: SQLite opens
    anything lazily and fails only at the first query, with a bare "file is not a
    database".
    """
    try:
        with path.open("rb") as file:
            header = file.read(len(SQLITE_HEADER))
    except FileNotFoundError:
        header = b""
    except OSError as error:
        raise StudyFileError(f"cannot be read: {error.strerror}") from None
    if header and header != SQLITE_HEADER:
        raise StudyFileError("is not a study database (not an SQLite file)")
    try:
        return optuna.storages.RDBStorage(f"sqlite:///{path}")
    except sqlalchemy.exc.DatabaseError as error:
        raise StudyFileError(f"cannot be read as a study database: {error.orig}") from None


def is_disk_full(error: BaseException) -> bool:
    """Whether `error`, or any error it was raised from, is a full disk.

    Optuna wraps SQLite's SQLITE_FULL ("database or disk is full") in a
    StorageInternalError; writing a file raises OSError(ENOSPC) itself.
    """
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in DISK_FULL_ERRNOS:
            return True
        if isinstance(seen, sqlite3.Error) and getattr(seen, "sqlite_errorcode", None) in (
            sqlite3.SQLITE_FULL,
        ):
            return True
        orig = seen.orig if isinstance(seen, sqlalchemy.exc.DBAPIError) else None
        if orig is not None and is_disk_full(orig):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
