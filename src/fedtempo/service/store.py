"""The durable store: a SQLite ledger (WAL, ``synchronous=FULL``) and content-addressed blobs.

Tensors live in ``blobs/<sha[:2]>/<sha>`` (safetensors bytes named by their SHA-256), written
atomically: a temporary file, fsync, rename, fsync of the directory. A blob is written *before*
the transaction that references it commits, so a crash leaves at worst an orphan blob (removed
by ``collect_garbage`` at start), never a row pointing at a missing or truncated file.

The schema is versioned (``meta.schema_version``): ``MIGRATIONS[i]`` takes version i to i + 1,
and a state directory written by a newer fedtempo is refused rather than misread.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

FAILPOINT_ENV = "FEDTEMPO_FAILPOINT"

MIGRATIONS: list[str] = [
    # 0 -> 1: the first schema
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, spec TEXT NOT NULL, kind TEXT NOT NULL,
        status TEXT NOT NULL, created REAL NOT NULL, version INTEGER NOT NULL,
        accepted INTEGER NOT NULL DEFAULT 0, received INTEGER NOT NULL DEFAULT 0,
        rounds_done INTEGER NOT NULL DEFAULT 0, rounds_failed INTEGER NOT NULL DEFAULT 0,
        done_reason TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE parties (
        job TEXT NOT NULL REFERENCES jobs(id), name TEXT NOT NULL, id INTEGER NOT NULL,
        public_key BLOB NOT NULL, samples INTEGER NOT NULL DEFAULT 0,
        dispatches INTEGER NOT NULL DEFAULT 0, next_epochs INTEGER,
        PRIMARY KEY (job, name), UNIQUE (job, id)
    );
    CREATE TABLE versions (
        job TEXT NOT NULL REFERENCES jobs(id), version INTEGER NOT NULL, sha TEXT NOT NULL,
        PRIMARY KEY (job, version)
    );
    CREATE TABLE tasks (
        job TEXT NOT NULL REFERENCES jobs(id), id TEXT NOT NULL, party INTEGER NOT NULL,
        base_version INTEGER NOT NULL, dispatch INTEGER NOT NULL, epochs INTEGER,
        round INTEGER, issued REAL NOT NULL, open INTEGER NOT NULL DEFAULT 1,
        PRIMARY KEY (job, id)
    );
    CREATE TABLE rounds (
        job TEXT NOT NULL REFERENCES jobs(id), number INTEGER NOT NULL, cohort TEXT NOT NULL,
        started REAL NOT NULL, deadline REAL, status TEXT NOT NULL, version INTEGER,
        PRIMARY KEY (job, number)
    );
    CREATE TABLE updates (
        job TEXT NOT NULL REFERENCES jobs(id), party INTEGER NOT NULL, key TEXT NOT NULL,
        seq INTEGER NOT NULL, task TEXT NOT NULL, base_version INTEGER NOT NULL,
        round INTEGER, sha TEXT NOT NULL, samples INTEGER NOT NULL, steps INTEGER NOT NULL,
        loss REAL NOT NULL, weight REAL, received REAL NOT NULL, status TEXT NOT NULL,
        response TEXT NOT NULL,
        PRIMARY KEY (job, party, key), UNIQUE (job, seq)
    );
    CREATE TABLE rejections (
        job TEXT NOT NULL REFERENCES jobs(id), reason TEXT NOT NULL, count INTEGER NOT NULL,
        PRIMARY KEY (job, reason)
    );
    CREATE TABLE nonces (party_key TEXT NOT NULL, nonce TEXT NOT NULL, ts REAL NOT NULL,
        PRIMARY KEY (party_key, nonce));
    CREATE INDEX nonces_ts ON nonces (ts);
    CREATE INDEX updates_status ON updates (job, status);
    CREATE INDEX updates_sha ON updates (sha);
    CREATE INDEX versions_sha ON versions (sha);
    CREATE INDEX tasks_party ON tasks (job, party, open);
    """,
    # 1 -> 2: aggregator workers (SPEC C): a round closes ('closing') before a worker publishes
    # it; a partial sum handed back to the store, with the last update seq it covers; when the
    # round's closing update landed and when its model was published; every worker's life
    """
    ALTER TABLE rounds ADD COLUMN partial TEXT;
    ALTER TABLE rounds ADD COLUMN partial_seq INTEGER;
    ALTER TABLE rounds ADD COLUMN closing_at REAL;
    ALTER TABLE rounds ADD COLUMN published REAL;
    ALTER TABLE jobs ADD COLUMN finished REAL;
    CREATE TABLE workers (
        id INTEGER PRIMARY KEY, job TEXT, policy TEXT NOT NULL, spawned REAL NOT NULL,
        ready REAL, exited REAL, cpu_s REAL NOT NULL DEFAULT 0,
        fused INTEGER NOT NULL DEFAULT 0, outcome TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX workers_job ON workers (job);
    """,
    # 2 -> 3: what an evaluator measured of a job's model versions (accuracy over time)
    """
    CREATE TABLE evaluations (
        job TEXT NOT NULL REFERENCES jobs(id), version INTEGER NOT NULL, at REAL NOT NULL,
        accuracy REAL NOT NULL, loss REAL, samples INTEGER NOT NULL,
        PRIMARY KEY (job, version)
    );
    """,
    # 3 -> 4: the buffered updates in arrival order from an index, not a walk of every update
    # the job ever stored (the planner took the (job, seq) index for the ORDER BY: an upload's
    # cost grew with the job's age); a party's newest base version from an index (the
    # dashboard's parties view walked every update too)
    """
    CREATE INDEX updates_status_seq ON updates (job, status, seq);
    DROP INDEX updates_status;
    CREATE INDEX updates_party_base ON updates (job, party, base_version);
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


class StoreError(RuntimeError):
    """The state directory cannot be used (a newer schema, a full or read-only disk)."""


def failpoint(name: str) -> None:
    """Kill this process (SIGKILL) here when ``FEDTEMPO_FAILPOINT`` names this point: crash
    tests hit exactly the dangerous moments."""
    if os.environ.get(FAILPOINT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Blobs:
    """Content-addressed safetensors files under one directory; also used by the aggregator
    workers, which write the models they fuse and never touch the ledger."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, sha: str) -> Path:
        return self.root / sha[:2] / sha

    def put(self, data: bytes) -> str:
        """Write ``data`` durably under its SHA-256 (a no-op if it is already there)."""
        sha = hashlib.sha256(data).hexdigest()
        path = self.path(sha)
        if path.exists() and path.stat().st_size == len(data):
            return sha
        path.parent.mkdir(exist_ok=True)
        tmp = self.root / "tmp" / f"{sha}.{os.getpid()}.part"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StoreError(f"cannot write to the state directory: {exc.strerror}") from None
        return sha

    def get(self, sha: str) -> bytes:
        return self.path(sha).read_bytes()


class Store:
    """One state directory: ``ledger.sqlite`` and ``blobs/``. Single writer (the server)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs"
        try:
            (self.blobs / "tmp").mkdir(parents=True, exist_ok=True)
            probe = self.blobs / "tmp" / f"write-probe.{os.getpid()}"
            probe.write_bytes(b"")  # a read-only directory is said so now, not mid-request
            probe.unlink()
            self.db = sqlite3.connect(
                root / "ledger.sqlite", isolation_level=None, check_same_thread=False
            )
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA foreign_keys=ON")
        except (OSError, sqlite3.Error) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
            raise StoreError(
                f"{root}: the state directory cannot be written ({reason}); fedtempo keeps its "
                "ledger and blobs there, so it needs write access and free space"
            ) from None
        self.blob_files = Blobs(self.blobs)
        self._staged: list[tuple[str, tuple[object, ...]]] = []
        self._migrate()

    def _migrate(self) -> None:
        has_meta = self.db.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'"
        ).fetchone()
        current = 0
        if has_meta:
            row = self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            current = int(row[0]) if row else 0
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"{self.root}: state schema version {current} is newer than this fedtempo "
                f"understands ({SCHEMA_VERSION}); upgrade fedtempo"
            )
        for version in range(current, SCHEMA_VERSION):
            # one script, one transaction: the schema and its version number change together
            script = (
                "BEGIN IMMEDIATE;"
                + MIGRATIONS[version]
                + f"INSERT OR REPLACE INTO meta VALUES ('schema_version', '{version + 1}');"
                + "COMMIT;"
            )
            try:
                self.db.executescript(script)
            except sqlite3.Error:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        self.db.close()

    def stage(self, sql: str, params: tuple[object, ...]) -> None:
        """A write that rides along with the next transaction (one commit, one fsync, instead
        of two); ``flush`` commits it alone if no transaction follows."""
        self._staged.append((sql, params))

    def flush(self) -> None:
        if self._staged:
            with self.tx():
                pass

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE), staged writes first: all of it commits,
        or none (the staged writes are then dropped too)."""
        staged, self._staged = self._staged, []
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for sql, params in staged:
                self.db.execute(sql, params)
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        failpoint("before-commit")
        try:
            self.db.execute("COMMIT")
        except sqlite3.Error:  # a full disk can refuse the commit itself: leave no open tx
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    # ---- blobs ------------------------------------------------------------------------------

    def blob_path(self, sha: str) -> Path:
        return self.blob_files.path(sha)

    def put_blob(self, data: bytes) -> str:
        """Write ``data`` durably under its SHA-256 (a no-op if it is already there)."""
        return self.blob_files.put(data)

    def get_blob(self, sha: str) -> bytes:
        return self.blob_files.get(sha)

    def referenced_blobs(self) -> set[str]:
        rows = self.db.execute(
            "SELECT sha FROM versions UNION SELECT sha FROM updates WHERE status='buffered' "
            "UNION SELECT partial FROM rounds WHERE partial IS NOT NULL"
        )
        return {str(r[0]) for r in rows}

    def delete_blobs(self, shas: set[str]) -> None:
        """Remove blobs no row references any more (called after the commit that freed them)."""
        for sha in shas:
            used = self.db.execute(
                "SELECT 1 FROM versions WHERE sha=? UNION ALL "
                "SELECT 1 FROM updates WHERE sha=? AND status='buffered' UNION ALL "
                "SELECT 1 FROM rounds WHERE partial=? LIMIT 1",
                (sha, sha, sha),
            ).fetchone()
            if used is None:
                self.blob_path(sha).unlink(missing_ok=True)

    def collect_garbage(self) -> int:
        """Remove temporary files and blobs no row references (left by a crash); returns how
        many files went."""
        keep, removed = self.referenced_blobs(), 0
        for path in self.blobs.glob("*/*"):
            if path.parent.name == "tmp" or path.name not in keep:
                path.unlink(missing_ok=True)
                removed += 1
        return removed
