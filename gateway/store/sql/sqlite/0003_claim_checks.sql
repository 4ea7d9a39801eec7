-- Claim checks (DESIGN 5.3): an event's data may live in the blob store instead of its row, and
-- a delivery may be told to send a reference instead of the payload (after a 413).
ALTER TABLE events ADD COLUMN blob TEXT;  -- sha256 of the data in the blob store; data is then empty
ALTER TABLE events ADD COLUMN content_type TEXT NOT NULL DEFAULT 'application/json';
ALTER TABLE deliveries ADD COLUMN claim_check INTEGER NOT NULL DEFAULT 0;
CREATE INDEX events_blob ON events (blob) WHERE blob IS NOT NULL;

-- One row per stored blob: the collector deletes it once nothing needs it any more.
CREATE TABLE blobs (
    sha256        TEXT    PRIMARY KEY,
    size          INTEGER NOT NULL,
    content_type  TEXT    NOT NULL,
    created_at    REAL    NOT NULL,
    keep_until    REAL    NOT NULL  -- the latest expiry of a URL handed out, or of a buffered event
);
CREATE INDEX blobs_keep ON blobs (keep_until);
