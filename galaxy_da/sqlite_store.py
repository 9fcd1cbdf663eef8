"""A local sqlite MLflow store: created and migrated by one process at a time, or refused in one line.

MLflow creates a new sqlite store's tables and runs its schema migrations in
whichever process opens the store first. Processes that open a new store
together (``galaxy-da train`` started twice) all migrate it; all but one die
(``table experiments already exists``, ``table _alembic_tmp_experiments already
exists``, ``Online migration expected to match one row``), and the store can be
left half-migrated.

:func:`ready_store` opens a ``sqlite:///`` store once per process under an
exclusive ``fcntl.flock`` on ``<db>.lock`` beside the database file (the kernel
releases it if the holder dies): the first process creates and migrates the
schema, the others wait and then find it current. A store that still cannot be
opened (half-migrated by a killed process, or older than this MLflow) raises
:class:`StoreError`: one line naming the store and what to do.

MLflow is imported only when a store is readied.
"""

from __future__ import annotations

import contextlib
import fcntl
from pathlib import Path
from typing import Iterator, Optional

SQLITE_PREFIX = "sqlite:///"
_ready: set[str] = set()  # the stores this process has opened


class StoreError(RuntimeError):
    """An MLflow store that cannot be opened, phrased as one line naming it and what to do."""


def sqlite_path(tracking_uri: str) -> Optional[Path]:
    """The database file of a ``sqlite:///`` URI; None for any other store (a server, an in-memory database)."""
    if not tracking_uri.startswith(SQLITE_PREFIX):
        return None
    path = tracking_uri.removeprefix(SQLITE_PREFIX).split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)


@contextlib.contextmanager
def store_lock(database: Path) -> Iterator[Path]:
    """Hold an exclusive lock on ``<database>.lock`` (waiting for it); yields the lock file's path."""
    lock = database.with_name(database.name + ".lock")
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield lock
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def refusal(database: Path, tracking_uri: str, error: BaseException) -> str:
    """One line: the store, MLflow's reason (its first line) and the way out."""
    reason = " ".join(str(getattr(error, "message", error)).split())[:300]
    return (
        f"MLflow store {database} cannot be opened ({type(error).__name__}: {reason}). A process killed while it "
        f"created or upgraded the store can leave it half-migrated: back it up and run `mlflow db upgrade {tracking_uri}`, "
        f"or, if it holds no runs yet, delete {database} and run again"
    )


def ready_store(tracking_uri: str, artifact_root: Optional[str]) -> None:
    """Create and migrate the sqlite store of ``tracking_uri``, one process at a time; any other store is left alone.

    ``artifact_root`` is where the store puts artifacts (only used to open it).
    Raises :class:`StoreError` when the store cannot be opened.
    """
    database = sqlite_path(tracking_uri)
    if database is None or tracking_uri in _ready:
        return
    from alembic.util import CommandError
    from mlflow.exceptions import MlflowException
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    from sqlalchemy.exc import SQLAlchemyError

    database.parent.mkdir(parents=True, exist_ok=True)
    with store_lock(database):
        try:
            SqlAlchemyStore(tracking_uri, artifact_root or database.parent.as_uri())  # creates and migrates a new store
        except (MlflowException, SQLAlchemyError, CommandError, OSError) as error:
            raise StoreError(refusal(database, tracking_uri, error)) from None
    _ready.add(tracking_uri)
