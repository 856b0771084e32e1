"""The labeling store: every SQL statement of the app lives in this module (SQLite in WAL mode, or PostgreSQL).

Tables (constraints live in the schema, not only in code):
  annotators   name, role (admin | annotator), argon2 password hash; a removed account keeps its row (its
               labels reference it) with removed_at set, and can neither log in nor submit
  sessions     signed-in browsers: the sha256 of the login cookie's token (never the token), the account, when it
               started and was last seen; a password reset, a role change or a removal deletes the account's rows,
               which ends those sessions at their next request
  prompts      the prompt row (messages + the task fields the scripted annotator needs)
  candidates   k model responses per prompt, with provenance: checkpoint path + sha256, decoding, seed
  items        what is judged: a prompt with 2 candidates (kind "pair") or all k (kind "rank"),
               how many annotators may judge it (max_judgments), reward-model margin when known, and the
               spread of an ensemble's margins (disagreement) when several reward models scored it
  assignments  an item handed to an annotator, with the shuffled order it is shown in; it reserves
               one of the item's judgment slots until it is submitted or its lease expires
  judgments    one per (item, annotator) [UNIQUE]; never more than the item's max_judgments [trigger];
               shown order, pairwise choice (a | b | tie | both_bad, a = first shown) or ranks per
               shown position (1 = best, ties allowed) and, for a ranking, which shown responses fail the
               task (bad: no preference is taken between two of them), flags, the annotator's correction, times
  rounds       labeling rounds: round n = the candidates of one generating checkpoint (its sha256) [UNIQUE];
               round 1 is the SFT policy, each `make round` seeds the next from the newest aligned policy
  arena_answers  one answer per (held-out prompt, model, checkpoint sha); `current` marks the latest
               checkpoint of each model (a retrained model's old answers and votes stay, unused)
  arena_shown  the match an annotator has open (a reload shows the same one), sides already drawn
  arena_votes  blind side-by-side votes: which answer was left and which right, the choice
               (a = left), times; one per (annotator, pair of answers) [UNIQUE]

`Store(path)` opens (or creates) a SQLite file; `Store("postgresql://user@host/db")` a PostgreSQL database, so
several app workers on several machines can serve one team. The SQL is written once, in the subset both speak
(`ON CONFLICT`, `RETURNING`); only the schema's types and the triggers differ.

Every write is one transaction that holds the store's write lock: SQLite's `BEGIN IMMEDIATE`, PostgreSQL's
transaction-scoped advisory lock. Writes are milliseconds, and one writer at a time is what makes "never more
judgments than max_judgments" and "never the same item to two annotators" hold without retry loops; reads
never wait. A commit is durable before `submit` returns (SQLite `synchronous=FULL`, PostgreSQL's default
`synchronous_commit=on`), so an acknowledged judgment survives `kill -9` (and a power cut). Open one `Store`
per process; it keeps one connection per thread.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import re
import statistics
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerifyMismatchError

from core.config import UserError
from labeling_ui.sampling import ItemState, choose

ROLES = ("admin", "annotator")
CHOICES = ("a", "b", "tie", "both_bad")
FLAGS = ("unsafe", "nonsense")
MAX_CORRECTION_CHARS = 4000
MIN_PASSWORD_CHARS = 8
# Passwords that guessing lists try first; refused at creation and reset whatever their length.
COMMON_PASSWORDS = frozenset("""
password password1 password12 password123 passw0rd p@ssw0rd p@ssword 12345678 123456789 1234567890 87654321
11111111 00000000 12341234 11223344 qwertyui qwerty12 qwerty123 qwertyuiop 1q2w3e4r 1qaz2wsx zaq12wsx asdfghjk
asdf1234 abcd1234 abc12345 abcdefgh iloveyou iloveyou1 sunshine princess football baseball basketball superman
batman123 starwars trustno1 letmein1 letmeinplease welcome1 welcome123 whatever dragon12 monkey12 shadow12
master12 michael1 jennifer charlie1 changeme changeme1 admin123 administrator default1 secret12 computer
internet freedom1 loveyou1 hello123 hellohello test1234 testtest guest123 labeling annotator annotate
""".split())

SCHEMA = """
CREATE TABLE IF NOT EXISTS annotators (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 64),
    role          TEXT NOT NULL CHECK (role IN ('admin', 'annotator')),
    password_hash TEXT NOT NULL,
    created_at    REAL NOT NULL,
    removed_at    REAL
);
CREATE TABLE IF NOT EXISTS sessions (
    token_sha  TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    address    TEXT,
    started_at REAL NOT NULL,
    seen_at    REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS prompts (
    id         TEXT PRIMARY KEY,
    row        TEXT NOT NULL CHECK (json_valid(row)),
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS candidates (
    id             INTEGER PRIMARY KEY,
    prompt_id      TEXT NOT NULL REFERENCES prompts(id),
    text           TEXT NOT NULL,
    checkpoint     TEXT NOT NULL,
    checkpoint_sha TEXT NOT NULL,
    decoding       TEXT NOT NULL CHECK (json_valid(decoding)),
    seed           INTEGER NOT NULL,
    n_tokens       INTEGER,
    finished       INTEGER,
    logprob        REAL,
    rm_score       REAL,
    created_at     REAL NOT NULL,
    UNIQUE (prompt_id, checkpoint_sha, decoding, seed)
);
CREATE TABLE IF NOT EXISTS items (
    id            INTEGER PRIMARY KEY,
    prompt_id     TEXT NOT NULL REFERENCES prompts(id),
    kind          TEXT NOT NULL CHECK (kind IN ('pair', 'rank')),
    candidate_ids TEXT NOT NULL CHECK (json_valid(candidate_ids)),
    max_judgments INTEGER NOT NULL CHECK (max_judgments >= 1),
    n_judged      INTEGER NOT NULL DEFAULT 0 CHECK (n_judged BETWEEN 0 AND max_judgments),  -- kept by a trigger
    margin        REAL,
    disagreement  REAL,
    created_at    REAL NOT NULL,
    UNIQUE (prompt_id, kind, candidate_ids)
);
CREATE TABLE IF NOT EXISTS assignments (
    item_id      INTEGER NOT NULL REFERENCES items(id),
    annotator_id INTEGER NOT NULL REFERENCES annotators(id),
    shown_order  TEXT NOT NULL CHECK (json_valid(shown_order)),
    assigned_at  REAL NOT NULL,
    PRIMARY KEY (item_id, annotator_id)
);
CREATE TABLE IF NOT EXISTS judgments (
    id           INTEGER PRIMARY KEY,
    item_id      INTEGER NOT NULL REFERENCES items(id),
    annotator_id INTEGER NOT NULL REFERENCES annotators(id),
    shown_order  TEXT NOT NULL CHECK (json_valid(shown_order)),
    choice       TEXT CHECK (choice IN ('a', 'b', 'tie', 'both_bad')),
    ranks        TEXT CHECK (ranks IS NULL OR json_valid(ranks)),
    bad          TEXT CHECK (bad IS NULL OR json_valid(bad)),
    flags        TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(flags)),
    correction   TEXT CHECK (correction IS NULL OR length(correction) BETWEEN 1 AND 4000),
    assigned_at  REAL,
    submitted_at REAL NOT NULL,
    UNIQUE (item_id, annotator_id),
    CHECK ((choice IS NULL) <> (ranks IS NULL))
);
CREATE TABLE IF NOT EXISTS rounds (
    number         INTEGER PRIMARY KEY CHECK (number >= 1),
    checkpoint     TEXT NOT NULL,
    checkpoint_sha TEXT NOT NULL UNIQUE,
    started_at     REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS arena_answers (
    id             INTEGER PRIMARY KEY,
    prompt_id      TEXT NOT NULL REFERENCES prompts(id),
    model          TEXT NOT NULL CHECK (length(model) BETWEEN 1 AND 64),
    checkpoint_sha TEXT NOT NULL,
    text           TEXT NOT NULL,
    decoding       TEXT NOT NULL CHECK (json_valid(decoding)),
    seed           INTEGER NOT NULL,
    current        INTEGER NOT NULL DEFAULT 1 CHECK (current IN (0, 1)),
    created_at     REAL NOT NULL,
    UNIQUE (prompt_id, model, checkpoint_sha)
);
CREATE TABLE IF NOT EXISTS arena_shown (
    annotator_id INTEGER PRIMARY KEY REFERENCES annotators(id),
    left_answer  INTEGER NOT NULL REFERENCES arena_answers(id),
    right_answer INTEGER NOT NULL REFERENCES arena_answers(id),
    shown_at     REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS arena_votes (
    id           INTEGER PRIMARY KEY,
    annotator_id INTEGER NOT NULL REFERENCES annotators(id),
    left_answer  INTEGER NOT NULL REFERENCES arena_answers(id),
    right_answer INTEGER NOT NULL REFERENCES arena_answers(id),
    choice       TEXT NOT NULL CHECK (choice IN ('a', 'b', 'tie', 'both_bad')),
    shown_at     REAL,
    voted_at     REAL NOT NULL,
    pair_key     TEXT NOT NULL,   -- "<smaller answer id>-<larger>": one vote per annotator and pair, either side
    UNIQUE (annotator_id, pair_key),
    CHECK (left_answer <> right_answer)
);
CREATE TABLE IF NOT EXISTS login_failures (   -- wrong passwords, per account and per client address
    id      INTEGER PRIMARY KEY,
    subject TEXT NOT NULL,              -- "account:<name>" or "address:<client address>"
    at      REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS login_locks (      -- accounts refused until an admin unlocks them
    subject   TEXT PRIMARY KEY,
    locked_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (             -- append-only: no path of this module updates or deletes a row
    id      INTEGER PRIMARY KEY,
    at      REAL NOT NULL,
    actor   TEXT NOT NULL,                  -- the account that acted, or "cli" for make user / make export
    action  TEXT NOT NULL,                  -- login_ok | login_failed | login_refused | logout | session_expired |
                                            -- account_created | password_set | role_set | account_removed |
                                            -- unlock | export | arena_answers
    subject TEXT,                           -- the account or file acted on
    detail  TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(detail))
);
CREATE INDEX IF NOT EXISTS sessions_by_name ON sessions (name);
CREATE INDEX IF NOT EXISTS login_failures_by_subject ON login_failures (subject, at);
CREATE INDEX IF NOT EXISTS arena_answers_current ON arena_answers (current, prompt_id);
CREATE INDEX IF NOT EXISTS arena_votes_pair ON arena_votes (pair_key);
CREATE INDEX IF NOT EXISTS judgments_by_annotator ON judgments (annotator_id);
CREATE INDEX IF NOT EXISTS items_open ON items (kind, n_judged);
CREATE INDEX IF NOT EXISTS assignments_by_annotator ON assignments (annotator_id);
CREATE INDEX IF NOT EXISTS candidates_by_prompt ON candidates (prompt_id);
"""
SQLITE_TRIGGERS = """
CREATE TRIGGER IF NOT EXISTS judgments_never_over_submitted BEFORE INSERT ON judgments
WHEN (SELECT count(*) FROM judgments WHERE item_id = NEW.item_id)
     >= (SELECT max_judgments FROM items WHERE id = NEW.item_id)
BEGIN SELECT RAISE(ABORT, 'item already has max_judgments judgments'); END;
CREATE TRIGGER IF NOT EXISTS judgments_count AFTER INSERT ON judgments
BEGIN UPDATE items SET n_judged = n_judged + 1 WHERE id = NEW.item_id; END;
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, 'audit rows are append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit BEGIN SELECT RAISE(ABORT, 'audit rows are append-only'); END;
"""
# The same two rules in PostgreSQL. Even raw concurrent inserts cannot over-submit: the count update
# row-locks the item, and items' CHECK (n_judged <= max_judgments) refuses the one too many.
POSTGRES_TRIGGERS = """
CREATE OR REPLACE FUNCTION judgments_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT count(*) FROM judgments WHERE item_id = NEW.item_id)
       >= (SELECT max_judgments FROM items WHERE id = NEW.item_id) THEN
        RAISE EXCEPTION 'item already has max_judgments judgments' USING ERRCODE = 'check_violation';
    END IF;
    UPDATE items SET n_judged = n_judged + 1 WHERE id = NEW.item_id;
    RETURN NEW;
END $$;
CREATE OR REPLACE TRIGGER judgments_guard BEFORE INSERT ON judgments FOR EACH ROW EXECUTE FUNCTION judgments_guard();
CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'audit rows are append-only'; END $$;
CREATE OR REPLACE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit FOR EACH ROW EXECUTE FUNCTION audit_append_only();
"""


def postgres_schema() -> str:
    """SCHEMA in PostgreSQL's types: identity ids, 8-byte floats (times are epoch seconds), JSON checked by a cast."""
    s = re.sub(r"\bid\s+INTEGER PRIMARY KEY", "id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", SCHEMA)
    s = re.sub(r"\bREAL\b", "DOUBLE PRECISION", s)
    s = re.sub(r"json_valid\((\w+)\)", r"(\1::jsonb IS NOT NULL)", s)
    return s + POSTGRES_TRIGGERS


def is_postgres(db: str | Path) -> bool:
    return str(db).startswith(("postgresql://", "postgres://"))


class _Row(dict):
    """A PostgreSQL row that reads like sqlite3.Row: by column name or by position."""
    __slots__ = ("_values",)

    def __init__(self, names, values):
        super().__init__(zip(names, values))
        self._values = values

    def __getitem__(self, key):
        return self._values[key] if isinstance(key, int) else super().__getitem__(key)


def _row_factory(cursor):
    names = [c.name for c in cursor.description or ()]
    return lambda values: _Row(names, values)


class _Postgres:
    """A psycopg connection that takes the module's SQL as written: `?` and `:name` placeholders. A statement
    outside a transaction (only reads are) that finds the connection dropped is repeated once on a new one."""

    def __init__(self, url: str):
        self.url = url
        self.conn = self._connect()
        self._sql: dict[str, str] = {}

    def _connect(self):
        import psycopg
        return psycopg.connect(self.url, autocommit=True, row_factory=_row_factory)

    def _q(self, sql: str) -> str:
        if sql not in self._sql:
            self._sql[sql] = re.sub(r"(?<!:):(\w+)", r"%(\1)s", sql.replace("?", "%s"))
        return self._sql[sql]

    def execute(self, sql: str, args=()):
        import psycopg
        outside = self.conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        try:
            return self.conn.execute(self._q(sql), args or None)
        except psycopg.OperationalError:
            if not (outside and self.conn.broken):
                raise
            self.conn = self._connect()
            return self.conn.execute(self._q(sql), args or None)

    def executemany(self, sql: str, rows):
        cur = self.conn.cursor()
        cur.executemany(self._q(sql), rows)
        return cur

    def close(self):
        self.conn.close()


class StoreError(UserError):
    """A request the store refuses; the message is meant for the person who made it."""


class ItemFull(StoreError):
    pass


class StoreUnavailable(StoreError):
    """The store could not take a write (its disk full or read-only, SQLite locked past its timeout, the PostgreSQL
    connection dropped): the transaction was rolled back and nothing of it was saved."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(f"the label store cannot take writes just now ({reason}); nothing of this was saved, "
                         "so submit again in a moment or tell your admin")


# SQLite result codes of a store that cannot take a write just now (the rest are bugs and stay loud).
UNAVAILABLE = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_READONLY", "SQLITE_FULL", "SQLITE_IOERR", "SQLITE_CANTOPEN",
               "SQLITE_PROTOCOL")


@dataclass
class Match:
    """An arena match as one annotator sees it: a prompt and two anonymous answers, sides drawn."""
    prompt: dict
    left: int                # arena answer ids
    right: int
    texts: list[str]         # [left, right]


@dataclass
class Shown:
    """An item as one annotator sees it: candidates in that annotator's shuffled order."""
    item_id: int
    kind: str
    prompt: dict
    candidate_ids: list[int]
    texts: list[str]


@dataclass
class LoginPolicy:
    max_failures: int = 5               # wrong passwords at one account before it waits
    max_failures_per_address: int = 20  # wrong passwords from one client address, any accounts, before it waits
    window_s: float = 900.0             # the first wait; it doubles with each further max_failures
    lock_after: int = 20                # wrong passwords before an account is locked until an admin unlocks it
    forget_s: float = 86400.0           # failures older than this no longer count


def check_password(name: str, password: str) -> None:
    """A one-line error for a password a guessing list would find early."""
    if len(password) < MIN_PASSWORD_CHARS:
        raise StoreError(f"password: use at least {MIN_PASSWORD_CHARS} characters")
    if password.lower() == name.lower():
        raise StoreError("password: must not be the account's own name")
    if password.lower() in COMMON_PASSWORDS or len(set(password)) < 3:
        raise StoreError("password: that is one of the most common passwords; choose another (a few unrelated words work)")


CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # C0 and C1 controls, DEL; tab and newline are text


def clean_text(text: str, field: str, limit: int) -> str | None:
    """People's text as the store keeps it: line endings as \\n, trimmed, None when empty; a one-line error for
    text past `limit` or with a control character (which no keyboard types, and PostgreSQL refuses NUL)."""
    text = (text or "").replace("\r\n", "\n").replace("\r", "\n").strip()
    if len(text) > limit:
        raise StoreError(f"{field} is {len(text)} characters; the limit is {limit}")
    if bad := CONTROL.search(text):
        raise StoreError(f"{field} has a control character (U+{ord(bad.group()):04X}) at character {bad.start() + 1}; "
                         "remove it (pasted text sometimes carries one)")
    return text or None


def _check_bad(bad: list[bool] | None, ranks: list[int]) -> None:
    """A ranking's per-response "fails the task" marks: one per response, and a failing response never ranks
    above one that does the task."""
    if bad is None:
        return
    if len(bad) != len(ranks) or any(not isinstance(b, bool) for b in bad):
        raise StoreError(f"mark each of the {len(ranks)} responses as failing the task or not "
                         f"(true / false), got {bad!r}")
    if any(bad):
        worst_good = max((r for r, b in zip(ranks, bad) if not b), default=0)
        best_bad = min(r for r, b in zip(ranks, bad) if b)
        if best_bad < worst_good:
            raise StoreError(f"a response that fails the task (rank {best_bad}) can not rank above one that does "
                             f"it (rank {worst_good}); rank the failing ones last")


def printable(text: str, limit: int = 64) -> str:
    """What a stranger typed (a login name), fit for the audit trail: at most `limit` characters, controls as U+FFFD."""
    return CONTROL.sub("\ufffd", text[:limit])


def _now() -> float:
    return time.time()


WRITE_LOCK = 0x1abe1  # PostgreSQL advisory lock key that every write transaction holds


class Store:
    def __init__(self, db: str | Path, lease_s: float = 1800.0, busy_timeout_s: float = 30.0):
        """`db`: a SQLite file path (created if missing) or a postgresql:// URL (the database must exist).
        `busy_timeout_s`: how long a write waits for another process's SQLite write lock before it fails."""
        self.postgres = is_postgres(db)
        self.busy_timeout_s = busy_timeout_s
        self.path = None if self.postgres else Path(db)
        self.where = _redact(str(db)) if self.postgres else str(db)
        self.lease_s = lease_s
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._hasher = PasswordHasher()
        self._url = str(db)
        if self.postgres:
            import psycopg
            self._integrity = (sqlite3.IntegrityError, psycopg.IntegrityError)
            self._faults = (psycopg.OperationalError,)
            try:
                with self._tx() as tx:
                    tx.execute(postgres_schema())
            except (psycopg.Error, StoreUnavailable) as e:
                why = e.reason if isinstance(e, StoreUnavailable) else _first_line(e)
                raise StoreError(f"{self.where}: cannot open the label store ({why}); check DB= (a reachable "
                                 "postgresql://user@host:port/database whose database exists)") from None
            self._add_missing_columns()
            return
        self._integrity = (sqlite3.IntegrityError,)
        self._faults = (sqlite3.DatabaseError,)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db().executescript("BEGIN IMMEDIATE;" + SCHEMA + SQLITE_TRIGGERS + "COMMIT;")
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{self.path}: not a usable label store ({e}); point --db / DB= at a labels .db file") from None
        self._add_missing_columns()

    def _add_missing_columns(self) -> None:
        """Columns added since a store was created (its labels stay as they are)."""
        with self._tx() as db:
            have = {r[0] for r in db.execute("SELECT * FROM items LIMIT 0").description}
            real = "DOUBLE PRECISION" if self.postgres else "REAL"
            if "disagreement" not in have:
                db.execute(f"ALTER TABLE items ADD COLUMN disagreement {real}")
            if "removed_at" not in {r[0] for r in db.execute("SELECT * FROM annotators LIMIT 0").description}:
                db.execute(f"ALTER TABLE annotators ADD COLUMN removed_at {real}")
            if "bad" not in {r[0] for r in db.execute("SELECT * FROM judgments LIMIT 0").description}:
                db.execute("ALTER TABLE judgments ADD COLUMN bad TEXT")

    # ------------------------------------------------------------------ connection and transactions
    def _db(self):
        db = getattr(self._local, "db", None)
        if db is None:
            if self.postgres:
                db = _Postgres(self._url)
            else:
                db = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False)
                db.row_factory = sqlite3.Row
                try:
                    db.execute("PRAGMA journal_mode=WAL")
                    db.execute("PRAGMA synchronous=FULL")
                    db.execute("PRAGMA foreign_keys=ON")  # connect's timeout is SQLite's busy timeout
                except sqlite3.Error:
                    db.close()
                    raise
            self._local.db = db
        return db

    @contextmanager
    def _tx(self):
        # Threads of this process queue on a lock (woken at once, in turn); only other processes meet
        # SQLite's busy handler, whose back-off sleeps (up to 100 ms each) made tail latency seconds long.
        # A fault of the store itself (see StoreUnavailable) rolls the transaction back and becomes one StoreError
        # that says why; a dropped PostgreSQL connection is replaced at the next call.
        with self._write_lock:
            try:
                db = self._db()
                if self.postgres:
                    with db.conn.transaction():
                        db.execute(f"SELECT pg_advisory_xact_lock({WRITE_LOCK})")
                        yield db
                    return
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            except self._faults as e:
                if not self.postgres and not getattr(e, "sqlite_errorname", "").startswith(UNAVAILABLE):
                    raise
                with contextlib.suppress(Exception):  # closing rolls back; a fresh connection next time
                    self.close()
                raise StoreUnavailable(self._fault_reason(e)) from None

    def _fault_reason(self, e: Exception) -> str:
        # SQLite says "unable to open database file" for a directory it cannot write its journal in
        if not self.postgres and not all(os.access(p, os.W_OK) for p in (self.path, self.path.parent) if p.exists()):
            return f"{self.path} is read-only"
        return _first_line(e)

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    # ------------------------------------------------------------------ accounts
    def add_annotator(self, name: str, password: str, role: str = "annotator", by: str = "cli") -> int:
        if role not in ROLES:
            raise StoreError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        if not name or len(name) > 64 or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise StoreError(f"user name {name!r}: use 1-64 letters, digits, '-', '_' or '.'")
        check_password(name, password)
        try:
            with self._tx() as db:
                new = db.execute("INSERT INTO annotators (name, role, password_hash, created_at) VALUES (?, ?, ?, ?) "
                                 "RETURNING id", (name, role, self._hasher.hash(password), _now())).fetchone()[0]
                self._audit(db, by, "account_created", name, role=role)
                return new
        except self._integrity:
            raise StoreError(f"user {name!r} already exists") from None

    def set_password(self, name: str, password: str, by: str = "cli") -> None:
        """A new password; the account's open sessions end (a reset is how a leaked one is shut out)."""
        check_password(name, password)
        with self._tx() as db:
            if not db.execute("UPDATE annotators SET password_hash = ? WHERE name = ? AND removed_at IS NULL",
                              (self._hasher.hash(password), name)).rowcount:
                raise StoreError(f"no user {name!r}")
            self._audit(db, by, "password_set", name, sessions_ended=self._end_sessions(db, name))

    def set_role(self, name: str, role: str, by: str = "cli") -> None:
        """A new role; the account's open sessions end, so no page keeps the old role's tabs."""
        if role not in ROLES:
            raise StoreError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        with self._tx() as db:
            self._keep_an_admin(db, name, "demote")
            if not db.execute("UPDATE annotators SET role = ? WHERE name = ? AND removed_at IS NULL", (role, name)).rowcount:
                raise StoreError(f"no user {name!r}")
            self._audit(db, by, "role_set", name, role=role, sessions_ended=self._end_sessions(db, name))

    def remove_annotator(self, name: str, by: str = "cli") -> None:
        """Close an account: it can no longer log in or submit, its sessions end and the items it had open go
        back to the others. Its judgments stay (they are labels), and so does its row."""
        with self._tx() as db:
            self._keep_an_admin(db, name, "remove")
            row = db.execute("UPDATE annotators SET removed_at = ? WHERE name = ? AND removed_at IS NULL RETURNING id",
                             (_now(), name)).fetchone()
            if row is None:
                raise StoreError(f"no user {name!r}")
            db.execute("DELETE FROM assignments WHERE annotator_id = ?", (row["id"],))
            db.execute("DELETE FROM arena_shown WHERE annotator_id = ?", (row["id"],))
            self._audit(db, by, "account_removed", name, sessions_ended=self._end_sessions(db, name))

    @staticmethod
    def _keep_an_admin(db, name: str, what: str) -> None:
        admins = [r["name"] for r in db.execute("SELECT name FROM annotators WHERE role = 'admin' AND removed_at IS NULL")]
        if admins == [name]:
            raise StoreError(f"{name} is the only admin: create another admin before you {what} this one")

    # ------------------------------------------------------------------ sessions (the login cookie's tokens)
    def start_session(self, token_sha: str, name: str, address: str | None = None) -> None:
        now = _now()
        with self._tx() as db:
            db.execute("INSERT INTO sessions (token_sha, name, address, started_at, seen_at) VALUES (?, ?, ?, ?, ?)",
                       (token_sha, name, address, now, now))

    def session_user(self, token_sha: str, idle_s: float, touch_s: float = 60.0) -> str | None:
        """The account a session belongs to, or None once it has ended: logged out, idle for `idle_s`, or ended by a
        password reset, role change or removal. Its last-seen time is written at most every `touch_s` (and every
        tenth of `idle_s`), so a session in use costs one indexed read per request."""
        row = self._db().execute("SELECT name, seen_at FROM sessions WHERE token_sha = ?", (token_sha,)).fetchone()
        if row is None:
            return None
        now = _now()
        idle = now - row["seen_at"]
        try:  # a store that cannot take writes just now still answers who is signed in
            if idle > idle_s:
                with self._tx() as db:
                    if db.execute("DELETE FROM sessions WHERE token_sha = ?", (token_sha,)).rowcount:
                        self._audit(db, row["name"], "session_expired", row["name"], idle_s=round(idle))
            elif idle > min(touch_s, idle_s / 10):
                with self._tx() as db:
                    db.execute("UPDATE sessions SET seen_at = ? WHERE token_sha = ?", (now, token_sha))
        except StoreUnavailable:
            pass
        return None if idle > idle_s else row["name"]

    def end_session(self, token_sha: str) -> None:
        """Log one session out."""
        with self._tx() as db:
            row = db.execute("DELETE FROM sessions WHERE token_sha = ? RETURNING name", (token_sha,)).fetchone()
            if row is not None:
                self._audit(db, row["name"], "logout", row["name"])

    def sessions(self, name: str | None = None) -> list[dict]:
        sql = "SELECT name, address, started_at, seen_at FROM sessions" + (" WHERE name = ?" if name else "")
        return [dict(r) for r in self._db().execute(sql + " ORDER BY started_at", (name,) if name else ())]

    @staticmethod
    def _end_sessions(db, name: str) -> int:
        return db.execute("DELETE FROM sessions WHERE name = ?", (name,)).rowcount

    def verify(self, name: str, password: str) -> bool:
        """Whether the password is the account's. An unknown account costs one argon2 verification too
        (against a hash of nothing anyone knows), so the time taken does not tell which accounts exist."""
        row = self._db().execute("SELECT password_hash FROM annotators WHERE name = ? AND removed_at IS NULL",
                                 (name,)).fetchone()
        try:
            return self._hasher.verify(row["password_hash"] if row else self._dummy_hash(), password) and row is not None
        except (VerifyMismatchError, InvalidHashError):
            return False

    def login(self, name: str, password: str, address: str, policy: "LoginPolicy") -> bool:
        """The app's login. A subject (the account, the client address) with `policy.max_failures` wrong
        passwords (`max_failures_per_address` for an address) since its last successful login, within
        `policy.forget_s`, is refused without running argon2
        until `policy.window_s` after its last failure, a wait that doubles with each further `max_failures`;
        an account with `policy.lock_after` is locked until an admin unlocks it. Refusals look like wrong
        passwords and are not counted, so a burst of guesses costs the server almost nothing. The counts live
        in the store, so every app worker sees them."""
        name = printable(name, 200)  # a name past 64 characters or with a control character matches no account
        subjects = [f"account:{name}", f"address:{address}"]
        now = _now()
        db = self._db()
        refused = db.execute("SELECT 1 FROM login_locks WHERE subject = ?", (subjects[0],)).fetchone() is not None
        for subject, most in zip(subjects, (policy.max_failures, policy.max_failures_per_address)):
            row = db.execute("SELECT count(*) AS n, max(at) AS last FROM login_failures WHERE subject = ? AND at > ?",
                             (subject, now - policy.forget_s)).fetchone()
            refused = refused or (row["n"] >= most and now < row["last"] + policy.window_s * 2 ** (row["n"] // most - 1))
        if refused:
            with self._tx() as tx:
                self._audit(tx, name, "login_refused", name, address=address)
            return False
        ok = self.verify(name, password)
        with self._tx() as tx:
            self._audit(tx, name, "login_ok" if ok else "login_failed", name, address=address)
            if ok:
                tx.execute("DELETE FROM login_failures WHERE subject IN (?, ?) OR at <= ?",
                           (*subjects, now - policy.forget_s))
                return True
            for subject in subjects:
                tx.execute("INSERT INTO login_failures (subject, at) VALUES (?, ?)", (subject, now))
            n = tx.execute("SELECT count(*) FROM login_failures WHERE subject = ? AND at > ?",
                           (subjects[0], now - policy.forget_s)).fetchone()[0]
            if n >= policy.lock_after and self.annotator(name) is not None:
                tx.execute("INSERT INTO login_locks (subject, locked_at) VALUES (?, ?) ON CONFLICT (subject) DO NOTHING",
                           (subjects[0], now))
        return False

    def unlock(self, name: str, by: str = "cli") -> bool:
        """Lift an account's lock and forget its failed logins; False when it was neither locked nor throttled."""
        with self._tx() as db:
            locks = db.execute("DELETE FROM login_locks WHERE subject = ?", (f"account:{name}",)).rowcount
            fails = db.execute("DELETE FROM login_failures WHERE subject = ?", (f"account:{name}",)).rowcount
            if locks or fails:
                self._audit(db, by, "unlock", name, failures=fails)
        return bool(locks or fails)

    # ------------------------------------------------------------------ audit trail (append-only)
    @staticmethod
    def _audit(db, actor: str, action: str, subject: str | None = None, **detail) -> None:
        db.execute("INSERT INTO audit (at, actor, action, subject, detail) VALUES (?, ?, ?, ?, ?)",
                   (_now(), actor, action, subject, json.dumps(detail, sort_keys=True)))

    def record(self, actor: str, action: str, subject: str | None = None, **detail) -> None:
        """Add an audit row from outside the store (an export, which writes files)."""
        with self._tx() as db:
            self._audit(db, actor, action, subject, **detail)

    def audit_log(self, limit: int | None = None) -> list[dict]:
        """Audit rows, newest first (all of them without a limit)."""
        sql = "SELECT id, at, actor, action, subject, detail FROM audit ORDER BY id DESC"
        rows = self._db().execute(sql + (f" LIMIT {int(limit)}" if limit else "")).fetchall()
        return [{**dict(r), "detail": json.loads(r["detail"])} for r in rows]

    def login_status(self) -> list[dict]:
        """Accounts with failed logins since their last success, and whether each is locked (the admin tab)."""
        db = self._db()
        locked = {r["subject"] for r in db.execute("SELECT subject FROM login_locks")}
        rows = db.execute("SELECT subject, count(*) AS n, max(at) AS last FROM login_failures "
                          "WHERE subject LIKE 'account:%' GROUP BY subject ORDER BY subject").fetchall()
        names = {r["subject"] for r in rows} | locked
        by = {r["subject"]: r for r in rows}
        return [{"name": s.split(":", 1)[1], "failures": by[s]["n"] if s in by else 0,
                 "last_failure": by[s]["last"] if s in by else None, "locked": s in locked} for s in sorted(names)]

    def _dummy_hash(self) -> str:
        if not hasattr(self, "_dummy"):
            self._dummy = self._hasher.hash(os.urandom(16).hex())
        return self._dummy

    def annotator(self, name: str) -> dict | None:
        row = self._db().execute("SELECT id, name, role FROM annotators WHERE name = ? AND removed_at IS NULL",
                                 (name,)).fetchone()
        return dict(row) if row else None

    def annotators(self, removed: bool = False) -> list[dict]:
        """The open accounts (and the removed ones too with `removed`)."""
        sql = "SELECT id, name, role, created_at, removed_at FROM annotators"
        return [dict(r) for r in self._db().execute(sql + ("" if removed else " WHERE removed_at IS NULL") + " ORDER BY id")]

    def _annotator_id(self, db, name: str) -> int:
        row = db.execute("SELECT id FROM annotators WHERE name = ? AND removed_at IS NULL", (name,)).fetchone()
        if row is None:
            raise StoreError(f"no user {name!r}")
        return row["id"]

    # ------------------------------------------------------------------ seeding
    def add_prompts(self, rows: list[dict]) -> None:
        """Prompt rows (each with an "id"), in one transaction; ids already stored are left as they are."""
        with self._tx() as db:
            db.executemany("INSERT INTO prompts (id, row, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                           [(r["id"], json.dumps(r, sort_keys=True), _now()) for r in rows])

    def add_candidates(self, rows: list[dict]) -> int:
        """Insert candidates ({prompt_id, text, checkpoint, checkpoint_sha, decoding, seed, ...}); duplicates are
        ignored (same prompt, checkpoint, decoding and seed). Returns how many were new."""
        with self._tx() as db:
            return db.executemany(
                "INSERT INTO candidates (prompt_id, text, checkpoint, checkpoint_sha, decoding, seed, "
                "n_tokens, finished, logprob, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [(r["prompt_id"], r["text"], r["checkpoint"], r["checkpoint_sha"], json.dumps(r["decoding"], sort_keys=True),
                  r["seed"], r.get("n_tokens"), _opt(int, r.get("finished")), _opt(float, r.get("logprob")), _now())
                 for r in rows]).rowcount

    def has_candidates(self, prompt_id: str, checkpoint_sha: str) -> int:
        return self._db().execute("SELECT count(*) FROM candidates WHERE prompt_id = ? AND checkpoint_sha = ?",
                                  (prompt_id, checkpoint_sha)).fetchone()[0]

    def candidates(self, prompt_id: str | None = None, checkpoint_sha: str | None = None) -> list[dict]:
        sql, args = "SELECT * FROM candidates WHERE 1 = 1", []
        if prompt_id is not None:
            sql, args = sql + " AND prompt_id = ?", args + [prompt_id]
        if checkpoint_sha is not None:
            sql, args = sql + " AND checkpoint_sha = ?", args + [checkpoint_sha]
        return [_candidate(r) for r in self._db().execute(sql + " ORDER BY id", args)]

    def start_round(self, checkpoint: str, checkpoint_sha: str) -> int:
        """The round of this generating checkpoint: its existing number, or the next one. A store from before
        rounds existed first numbers the checkpoints it already holds, oldest first."""
        with self._tx() as db:
            if db.execute("SELECT count(*) FROM rounds").fetchone()[0] == 0:
                old = db.execute("SELECT checkpoint_sha, min(checkpoint) AS checkpoint, min(id) AS first_id FROM candidates "
                                 "GROUP BY checkpoint_sha ORDER BY first_id").fetchall()
                db.executemany("INSERT INTO rounds (number, checkpoint, checkpoint_sha, started_at) VALUES (?, ?, ?, ?)",
                               [(n, r["checkpoint"], r["checkpoint_sha"], _now()) for n, r in enumerate(old, 1)])
            row = db.execute("SELECT number FROM rounds WHERE checkpoint_sha = ?", (checkpoint_sha,)).fetchone()
            if row is not None:
                return row[0]
            return db.execute("INSERT INTO rounds (number, checkpoint, checkpoint_sha, started_at) "
                              "SELECT COALESCE(max(number), 0) + 1, ?, ?, ? FROM rounds RETURNING number",
                              (checkpoint, checkpoint_sha, _now())).fetchone()[0]

    def rounds(self) -> dict[str, dict]:
        """checkpoint sha256 -> {number, checkpoint, started_at}."""
        return {r["checkpoint_sha"]: {"number": r["number"], "checkpoint": r["checkpoint"], "started_at": r["started_at"]}
                for r in self._db().execute("SELECT * FROM rounds ORDER BY number")}

    def add_item(self, prompt_id: str, kind: str, candidate_ids: list[int], max_judgments: int) -> bool:
        with self._tx() as db:
            return db.execute("INSERT INTO items (prompt_id, kind, candidate_ids, max_judgments, created_at) "
                              "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                              (prompt_id, kind, json.dumps(candidate_ids), max_judgments, _now())).rowcount == 1

    def set_rm_scores(self, scores: dict[int, float], members: list[dict[int, float]] = ()) -> None:
        """Reward-model scores per candidate id (an ensemble's mean); each item's margin becomes the smallest gap
        among its candidates. With the ensemble's members' scores, each item also gets their disagreement: the
        largest spread (population std) over members of the score gap between two of its candidates."""
        with self._tx() as db:
            db.executemany("UPDATE candidates SET rm_score = ? WHERE id = ?", [(float(s), int(c)) for c, s in scores.items()])
            for item in db.execute("SELECT id, candidate_ids FROM items").fetchall():
                ids = json.loads(item["candidate_ids"])
                vals = sorted(scores[c] for c in ids if c in scores)
                if len(vals) != len(ids):
                    continue
                spread = None
                if len(members) > 1:
                    spread = max(statistics.pstdev(m[a] - m[b] for m in members)
                                 for a, b in itertools.combinations(ids, 2))
                db.execute("UPDATE items SET margin = ?, disagreement = ? WHERE id = ?",
                           (min(b - a for a, b in zip(vals, vals[1:])), spread, item["id"]))

    # ------------------------------------------------------------------ assignment and submission
    def next_item(self, annotator: str, kind: str, active: bool = False) -> Shown | None:
        """The annotator's open item of this kind, or a new one: never one they judged, never one whose
        judgments plus others' live assignments already fill it. None when nothing is left."""
        if kind not in ("pair", "rank"):
            raise StoreError(f"kind must be pair or rank, got {kind!r}")
        cutoff = _now() - self.lease_s
        with self._tx() as db:
            aid = self._annotator_id(db, annotator)
            row = db.execute("SELECT a.item_id, a.shown_order FROM assignments a JOIN items i ON i.id = a.item_id "
                             "WHERE a.annotator_id = ? AND i.kind = ? AND a.assigned_at > ? ORDER BY a.assigned_at LIMIT 1",
                             (aid, kind, cutoff)).fetchone()
            if row is None:
                pick = self._pick(db, aid, kind, active, cutoff)
                if pick is None:
                    return None
                ids = json.loads(db.execute("SELECT candidate_ids FROM items WHERE id = ?", (pick,)).fetchone()[0])
                random.Random(f"{aid}:{pick}").shuffle(ids)
                db.execute("INSERT INTO assignments (item_id, annotator_id, shown_order, assigned_at) VALUES (?, ?, ?, ?) "
                           "ON CONFLICT (item_id, annotator_id) DO UPDATE SET shown_order = excluded.shown_order, "
                           "assigned_at = excluded.assigned_at", (pick, aid, json.dumps(ids), _now()))
                row = {"item_id": pick, "shown_order": json.dumps(ids)}
            return self._shown(db, row["item_id"], json.loads(row["shown_order"]))

    def _pick(self, db, aid: int, kind: str, active: bool, cutoff: float) -> int | None:
        """Choose among open items. SQL takes the first window of open items in the policy's order
        (fewest judgments first: indexed, so it stays fast with many items) and the pure policy picks
        one, counting other annotators' live assignments and spreading annotators over the window;
        windows move on until one has an item left."""
        order = ("(i.disagreement IS NULL), -i.disagreement, (i.margin IS NULL), i.margin, i.n_judged, i.id" if active
                 else "i.n_judged, i.id")
        window, offset = 64, 0
        while True:
            rows = db.execute(
                "SELECT i.id, i.margin, i.disagreement, i.max_judgments, i.n_judged, "
                "  (SELECT count(*) FROM assignments a WHERE a.item_id = i.id AND a.assigned_at > :cutoff "
                "     AND a.annotator_id <> :aid) AS n_assigned "
                "FROM items i WHERE i.kind = :kind AND i.n_judged < i.max_judgments "
                "  AND NOT EXISTS (SELECT 1 FROM judgments j WHERE j.item_id = i.id AND j.annotator_id = :aid) "
                f"ORDER BY {order} LIMIT :window OFFSET :offset",
                {"cutoff": cutoff, "aid": aid, "kind": kind, "window": window, "offset": offset}).fetchall()
            if not rows:
                return None
            pick = choose([ItemState(r["id"], r["n_judged"] + r["n_assigned"], r["margin"], r["disagreement"]) for r in rows
                           if r["n_judged"] + r["n_assigned"] < r["max_judgments"]], active=active, salt=aid)
            if pick is not None:
                return pick
            offset += window

    def _shown(self, db, item_id: int, order: list[int]) -> Shown:
        item = db.execute("SELECT i.kind, p.row FROM items i JOIN prompts p ON p.id = i.prompt_id WHERE i.id = ?",
                          (item_id,)).fetchone()
        texts = {r["id"]: r["text"] for r in db.execute(
            f"SELECT id, text FROM candidates WHERE id IN ({','.join('?' * len(order))})", order)}
        return Shown(item_id, item["kind"], json.loads(item["row"]), order, [texts[c] for c in order])

    def submit(self, annotator: str, item_id: int, choice: str | None = None, ranks: list[int] | None = None,
               flags: list[str] = (), correction: str | None = None, bad: list[bool] | None = None) -> int:
        """Record one judgment of an item assigned to `annotator`, in one transaction. Returns its id once durable.
        `bad` (rankings only): per shown response, whether it fails the task; none of those may rank above
        one that does not. None ticked is stored as no marks (NULL)."""
        flags = sorted(set(flags))
        if unknown := [f for f in flags if f not in FLAGS]:
            raise StoreError(f"unknown flag {printable(str(unknown[0]), 40)!r}; flags are {', '.join(FLAGS)}")
        correction = clean_text(correction, "correction", MAX_CORRECTION_CHARS)
        with self._tx() as db:
            aid = self._annotator_id(db, annotator)
            if db.execute("SELECT 1 FROM judgments WHERE item_id = ? AND annotator_id = ?", (item_id, aid)).fetchone():
                raise StoreError(f"you already judged item {item_id}")
            a = db.execute("SELECT a.shown_order, a.assigned_at, i.kind FROM assignments a JOIN items i ON i.id = a.item_id "
                           "WHERE a.item_id = ? AND a.annotator_id = ?", (item_id, aid)).fetchone()
            if a is None:
                raise StoreError(f"item {item_id} is not assigned to {annotator}; load the next item")
            order = json.loads(a["shown_order"])
            if a["kind"] == "pair":
                if choice not in CHOICES or ranks is not None or bad is not None:
                    raise StoreError(f"a pair takes a choice ({', '.join(CHOICES)}), got {choice!r}"
                                     + (" and per-response marks (both_bad says it for a pair)" if bad is not None else ""))
            else:
                if choice is not None or ranks is None or len(ranks) != len(order) \
                        or any(not isinstance(r, int) or not 1 <= r <= len(order) for r in ranks):
                    raise StoreError(f"a ranking gives each of the {len(order)} responses a rank from 1 (best) "
                                     f"to {len(order)}, got {ranks!r}")
                _check_bad(bad, ranks)
            try:
                jid = db.execute(
                    "INSERT INTO judgments (item_id, annotator_id, shown_order, choice, ranks, bad, flags, correction, "
                    "assigned_at, submitted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                    (item_id, aid, a["shown_order"], choice, json.dumps(ranks) if ranks is not None else None,
                     json.dumps([bool(b) for b in bad]) if bad is not None and any(bad) else None,
                     json.dumps(flags), correction, a["assigned_at"], _now())).fetchone()[0]
            except self._integrity as e:
                if "max_judgments" in str(e):
                    raise ItemFull(f"item {item_id} got its last judgment while your lease had expired; "
                                   "your text is still in the form, load the next item") from None
                raise
            db.execute("DELETE FROM assignments WHERE item_id = ? AND annotator_id = ?", (item_id, aid))
            return jid

    # ------------------------------------------------------------------ arena: blind side-by-side votes between models
    def add_arena_answers(self, model: str, checkpoint_sha: str, rows: list[dict], by: str = "cli") -> int:
        """Answers of one model checkpoint ({prompt_id, text, decoding, seed}); they become the model's current
        answers, and answers of its earlier checkpoints stop being matched (their votes stay): the audit trail
        records that reset. Returns how many were new."""
        with self._tx() as db:
            before = db.execute("SELECT count(*) FROM arena_answers WHERE model = ? AND current = 1 AND checkpoint_sha <> ?",
                                (model, checkpoint_sha)).fetchone()[0]
            added = db.executemany(
                "INSERT INTO arena_answers (prompt_id, model, checkpoint_sha, text, decoding, seed, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [(r["prompt_id"], model, checkpoint_sha, r["text"], json.dumps(r["decoding"], sort_keys=True),
                  r["seed"], _now()) for r in rows]).rowcount
            db.execute("UPDATE arena_answers SET current = CASE WHEN checkpoint_sha = ? THEN 1 ELSE 0 END WHERE model = ?",
                       (checkpoint_sha, model))
            db.execute("DELETE FROM arena_shown WHERE left_answer IN (SELECT id FROM arena_answers WHERE current = 0) "
                       "OR right_answer IN (SELECT id FROM arena_answers WHERE current = 0)")
            if added or before:
                self._audit(db, by, "arena_answers", model, checkpoint_sha=checkpoint_sha, added=added, retired=before)
            return added

    def next_match(self, annotator: str, rng: random.Random | None = None) -> Match | None:
        """The annotator's open match, or a new one: the pair of current answers (same prompt, different
        models) with the fewest votes that this annotator has not voted on; left and right drawn at random."""
        with self._tx() as db:
            aid = self._annotator_id(db, annotator)
            row = db.execute("SELECT left_answer, right_answer FROM arena_shown WHERE annotator_id = ?", (aid,)).fetchone()
            if row is None:
                key = ("CAST(CASE WHEN x.id < y.id THEN x.id ELSE y.id END AS TEXT) || '-' || "
                       "CAST(CASE WHEN x.id < y.id THEN y.id ELSE x.id END AS TEXT)")
                pick = db.execute(
                    f"SELECT x.id AS x, y.id AS y, (SELECT count(*) FROM arena_votes v WHERE v.pair_key = {key}) AS n "
                    "FROM arena_answers x JOIN arena_answers y "
                    "  ON y.prompt_id = x.prompt_id AND y.model > x.model AND y.current = 1 "
                    "WHERE x.current = 1 AND NOT EXISTS (SELECT 1 FROM arena_votes v WHERE v.annotator_id = ? "
                    f"  AND v.pair_key = {key}) ORDER BY n, random() LIMIT 1", (aid,)).fetchone()
                if pick is None:
                    return None
                left, right = (pick["x"], pick["y"]) if (rng or random).random() < 0.5 else (pick["y"], pick["x"])
                db.execute("INSERT INTO arena_shown (annotator_id, left_answer, right_answer, shown_at) VALUES (?, ?, ?, ?)",
                           (aid, left, right, _now()))
                row = {"left_answer": left, "right_answer": right}
            texts = {r["id"]: (r["text"], r["row"]) for r in db.execute(
                "SELECT a.id, a.text, p.row FROM arena_answers a JOIN prompts p ON p.id = a.prompt_id "
                "WHERE a.id IN (?, ?)", (row["left_answer"], row["right_answer"]))}
            left, right = row["left_answer"], row["right_answer"]
            return Match(json.loads(texts[left][1]), left, right, [texts[left][0], texts[right][0]])

    def arena_vote(self, annotator: str, left: int, right: int, choice: str) -> dict:
        """Record the annotator's vote on their open match (choice a = left). Returns the vote with the two
        model names, which the app reveals only now."""
        if choice not in CHOICES:
            raise StoreError(f"a vote is one of {', '.join(CHOICES)}, got {choice!r}")
        with self._tx() as db:
            aid = self._annotator_id(db, annotator)
            shown = db.execute("SELECT shown_at FROM arena_shown WHERE annotator_id = ? AND left_answer = ? "
                               "AND right_answer = ?", (aid, left, right)).fetchone()
            if shown is None:
                raise StoreError("this match is not the one open for you (voted already, or the models changed); "
                                 "load the next match")
            vid = db.execute("INSERT INTO arena_votes (annotator_id, left_answer, right_answer, choice, shown_at, "
                             "voted_at, pair_key) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                             (aid, left, right, choice, shown["shown_at"], _now(),
                              f"{min(left, right)}-{max(left, right)}")).fetchone()[0]
            db.execute("DELETE FROM arena_shown WHERE annotator_id = ?", (aid,))
            names = {r["id"]: r["model"] for r in db.execute("SELECT id, model FROM arena_answers WHERE id IN (?, ?)",
                                                             (left, right))}
            return {"id": vid, "left_model": names[left], "right_model": names[right], "choice": choice}

    def arena_votes(self, current_only: bool = True) -> list[dict]:
        """Votes with both sides' model, checkpoint and text; by default only between current answers."""
        sql = ("SELECT v.id, n.name AS annotator, v.choice, v.shown_at, v.voted_at, l.prompt_id, "
               "l.model AS left_model, r.model AS right_model, l.checkpoint_sha AS left_sha, r.checkpoint_sha AS right_sha, "
               "v.left_answer, v.right_answer FROM arena_votes v JOIN annotators n ON n.id = v.annotator_id "
               "JOIN arena_answers l ON l.id = v.left_answer JOIN arena_answers r ON r.id = v.right_answer")
        if current_only:
            sql += " WHERE l.current = 1 AND r.current = 1"
        return [dict(r) for r in self._db().execute(sql + " ORDER BY v.id")]

    def arena_answers(self, current_only: bool = True) -> list[dict]:
        sql = "SELECT * FROM arena_answers" + (" WHERE current = 1" if current_only else "")
        return [{**dict(r), "decoding": json.loads(r["decoding"])} for r in self._db().execute(sql + " ORDER BY id")]

    # ------------------------------------------------------------------ reading back
    def judgments(self, annotator: str | None = None) -> list[dict]:
        """Raw judgments joined with their item (prompt id, kind, candidate ids) and annotator name."""
        sql = ("SELECT j.*, a.name AS annotator, i.prompt_id, i.kind, i.candidate_ids FROM judgments j "
               "JOIN annotators a ON a.id = j.annotator_id JOIN items i ON i.id = j.item_id")
        args: tuple = ()
        if annotator is not None:
            sql, args = sql + " WHERE a.name = ?", (annotator,)
        out = []
        for r in self._db().execute(sql + " ORDER BY j.id", args):
            d = dict(r)
            for k in ("shown_order", "ranks", "bad", "flags", "candidate_ids"):
                d[k] = json.loads(d[k]) if d[k] is not None else None
            out.append(d)
        return out

    def prompts(self) -> dict[str, dict]:
        return {r["id"]: json.loads(r["row"]) for r in self._db().execute("SELECT id, row FROM prompts")}

    def items(self) -> list[dict]:
        rows = self._db().execute("SELECT i.*, (SELECT count(*) FROM judgments j WHERE j.item_id = i.id) AS n_judged "
                                  "FROM items i ORDER BY i.id")
        return [{**dict(r), "candidate_ids": json.loads(r["candidate_ids"])} for r in rows]

    def counts(self) -> dict:
        db = self._db()
        return {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("annotators", "prompts", "candidates", "items", "assignments", "judgments",
                          "rounds", "arena_answers", "arena_votes")}

    def integrity(self) -> str:
        """"ok", or what is wrong: SQLite's page-level check, and (both backends) that every item's
        judgment count matches its judgments."""
        if not self.postgres and (page := self._db().execute("PRAGMA integrity_check").fetchone()[0]) != "ok":
            return page
        bad = self._db().execute("SELECT count(*) FROM items i WHERE n_judged <> "
                                 "(SELECT count(*) FROM judgments j WHERE j.item_id = i.id)").fetchone()[0]
        return "ok" if bad == 0 else f"{bad} items whose n_judged disagrees with their judgments"


def _opt(kind, value):
    return None if value is None else kind(value)


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _redact(url: str) -> str:
    """A database URL without its password, for messages."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def _candidate(r) -> dict:
    d = dict(r)
    d["decoding"] = json.loads(d["decoding"])
    return d
