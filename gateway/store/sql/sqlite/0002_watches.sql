-- Watches: waits whose completion the gateway finds out by polling a job system.
CREATE TABLE watches (
    id             INTEGER PRIMARY KEY,
    wait_id        INTEGER NOT NULL UNIQUE REFERENCES waits (id),
    tenant         TEXT    NOT NULL,
    key            TEXT    NOT NULL,
    kind           TEXT    NOT NULL,
    connection     TEXT    NOT NULL,
    spec           TEXT    NOT NULL,
    state          TEXT    NOT NULL CHECK (state IN ('active', 'done', 'stopped')),
    next_poll_at   REAL    NOT NULL,
    polls          INTEGER NOT NULL DEFAULT 0,
    failures       INTEGER NOT NULL DEFAULT 0,
    job_status     TEXT,
    progress       TEXT,
    last_error     TEXT,
    lease_owner    TEXT,
    lease_until    REAL,
    updated_at     REAL    NOT NULL
);
CREATE INDEX watches_due ON watches (next_poll_at) WHERE state = 'active';
