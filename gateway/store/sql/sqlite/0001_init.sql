-- Waits, events and the delivery outbox (DESIGN 2, 6). Timestamps are epoch seconds (REAL).
CREATE TABLE waits (
    id            INTEGER PRIMARY KEY,
    tenant        TEXT    NOT NULL,
    key           TEXT    NOT NULL,
    token_digest  TEXT    NOT NULL,
    token_key_id  TEXT    NOT NULL,
    token_blob    BLOB    NOT NULL,
    state         TEXT    NOT NULL CHECK (state IN ('open', 'resolved', 'cancelled', 'expired')),
    created_at    REAL    NOT NULL,
    expires_at    REAL    NOT NULL,
    resolved_at   REAL,
    job           TEXT,
    metadata      TEXT
);
-- At most one open wait per key; a token belongs to one wait for ever.
CREATE UNIQUE INDEX waits_open_key ON waits (tenant, key) WHERE state = 'open';
CREATE UNIQUE INDEX waits_token ON waits (tenant, token_digest);
CREATE INDEX waits_key ON waits (tenant, key, id);
CREATE INDEX waits_expiry ON waits (expires_at) WHERE state = 'open';

CREATE TABLE events (
    id            INTEGER PRIMARY KEY,
    tenant        TEXT    NOT NULL,
    source        TEXT    NOT NULL,
    event_id      TEXT    NOT NULL,
    key           TEXT    NOT NULL,
    status        TEXT    NOT NULL CHECK (status IN ('succeeded', 'failed')),
    data          BLOB    NOT NULL,
    state         TEXT    NOT NULL CHECK (state IN ('buffered', 'matched', 'late', 'unmatched')),
    wait_id       INTEGER REFERENCES waits (id),
    received_at   REAL    NOT NULL,
    occurred_at   REAL,
    buffer_until  REAL,
    duplicates    INTEGER NOT NULL DEFAULT 0,
    UNIQUE (tenant, source, event_id)
);
CREATE INDEX events_buffered ON events (tenant, key, id) WHERE state = 'buffered';
CREATE INDEX events_buffer_expiry ON events (buffer_until) WHERE state = 'buffered';

CREATE TABLE deliveries (
    id               INTEGER PRIMARY KEY,
    tenant           TEXT    NOT NULL,
    wait_id          INTEGER NOT NULL UNIQUE REFERENCES waits (id),
    event_row        INTEGER NOT NULL REFERENCES events (id),
    state            TEXT    NOT NULL CHECK (state IN ('pending', 'sending', 'delivered',
                         'delivered_unconfirmed', 'dead', 'expired', 'cancelled')),
    deadline         REAL    NOT NULL,
    next_attempt_at  REAL    NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    ambiguous        INTEGER NOT NULL DEFAULT 0,
    lease_owner      TEXT,
    lease_until      REAL,
    last_status      INTEGER,
    reason           TEXT,
    created_at       REAL    NOT NULL,
    finished_at      REAL
);
CREATE INDEX deliveries_due ON deliveries (tenant, deadline, id) WHERE state = 'pending';
CREATE INDEX deliveries_leased ON deliveries (lease_until) WHERE state = 'sending';

-- The sliding rate window: one row per resume request sent with a credential.
CREATE TABLE sends (
    credential  TEXT NOT NULL,
    sent_at     REAL NOT NULL
);
CREATE INDEX sends_window ON sends (credential, sent_at);

CREATE TABLE tenant_pauses (
    tenant  TEXT PRIMARY KEY,
    until   REAL NOT NULL,
    reason  TEXT NOT NULL
);
