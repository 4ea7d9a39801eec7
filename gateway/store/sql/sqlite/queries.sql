-- Named queries of the SQLite store, loaded once. Parameters are named (:name).

-- name: wait_by_token
-- With what a repeat must match: the job, the metadata and the watch's spec.
SELECT w.id, w.key, w.job, w.metadata, (SELECT spec FROM watches WHERE wait_id = w.id)
FROM waits w WHERE w.tenant = :tenant AND w.token_digest = :token_digest;

-- name: open_wait_by_key
SELECT id, expires_at FROM waits WHERE tenant = :tenant AND key = :key AND state = 'open';

-- name: latest_wait
SELECT id, state, expires_at FROM waits WHERE tenant = :tenant AND key = :key
ORDER BY id DESC LIMIT 1;

-- name: insert_wait
INSERT INTO waits (tenant, key, token_digest, token_key_id, token_blob, state, created_at,
                   expires_at, job, metadata)
VALUES (:tenant, :key, :token_digest, :token_key_id, :token_blob, 'open', :now,
        :expires_at, :job, :metadata);

-- name: first_buffered_event
SELECT id FROM events
WHERE tenant = :tenant AND key = :key AND state = 'buffered' AND buffer_until >= :now
ORDER BY id LIMIT 1;

-- name: upsert_event
-- A repeated (tenant, source, event_id) only counts the duplicate; RETURNING tells which.
INSERT INTO events (tenant, source, event_id, key, status, data, state, wait_id, received_at,
                    occurred_at, buffer_until, blob, content_type)
VALUES (:tenant, :source, :event_id, :key, :status, :data, :state, :wait_id, :now,
        :occurred_at, :buffer_until, :blob, :content_type)
ON CONFLICT (tenant, source, event_id) DO UPDATE SET duplicates = duplicates + 1
RETURNING id, duplicates;

-- name: match_event
UPDATE events SET state = 'matched', wait_id = :wait_id WHERE id = :event_row;

-- name: resolve_wait
UPDATE waits SET state = 'resolved', resolved_at = :now WHERE id = :wait_id AND state = 'open';

-- name: orphan_buffered
UPDATE events SET state = 'late'
WHERE tenant = :tenant AND key = :key AND state = 'buffered' AND buffer_until >= :now;

-- name: insert_delivery
INSERT INTO deliveries (tenant, wait_id, event_row, state, deadline, next_attempt_at, created_at)
SELECT :tenant, :wait_id, :event_row, 'pending', expires_at, :now, :now FROM waits WHERE id = :wait_id;

-- name: wait_view
-- The key's latest wait, or with :id one given wait of the key.
SELECT w.id, w.tenant, w.key, w.state, w.created_at, w.expires_at, w.resolved_at, w.job,
       w.metadata, e.event_id, e.source, d.id AS delivery_id, d.state AS delivery_state,
       d.attempts, d.next_attempt_at, d.reason, d.last_status, d.finished_at
FROM waits w
LEFT JOIN deliveries d ON d.wait_id = w.id
LEFT JOIN events e ON e.id = d.event_row
WHERE w.tenant = :tenant AND w.key = :key AND (:id IS NULL OR w.id = :id)
ORDER BY w.id DESC LIMIT 1;

-- name: cancel_wait
UPDATE waits SET state = 'cancelled', resolved_at = :now WHERE id = :wait_id;

-- name: delivery_may_have_arrived
-- Whether a request of the wait's delivery may have reached Workato (a timeout, a 5xx).
SELECT ambiguous FROM deliveries WHERE wait_id = :wait_id;

-- name: cancel_delivery
UPDATE deliveries SET state = 'cancelled', finished_at = :now, reason = 'cancelled'
WHERE wait_id = :wait_id AND state = 'pending';

-- name: cancelled_delivery
-- The delivery cancel_delivery just ended, in deliveries_to_expire's columns: the outcome told.
SELECT d.id, d.tenant, w.key, e.event_id, e.source, d.attempts, d.last_status, e.received_at
FROM deliveries d
JOIN waits w ON w.id = d.wait_id
JOIN events e ON e.id = d.event_row
WHERE d.wait_id = :wait_id AND d.state = 'cancelled';

-- name: due_few
-- The tenant's due deliveries, up to :cap of them, from deliveries_next: during an outage the
-- pending rows are mostly waiting out a retry delay, and deliveries_due's deadline order
-- reads all of those ahead of a due one (16 ms at 200,000, per claim, on the writer).
SELECT id, deadline FROM deliveries INDEXED BY deliveries_next
WHERE tenant = :tenant AND state = 'pending' AND next_attempt_at <= :now
LIMIT :cap;

-- name: due_deliveries
-- Earliest deadline first, in deliveries_due's order, for a backlog of due rows (where the
-- first rows in that order are mostly due).
SELECT id FROM deliveries INDEXED BY deliveries_due
WHERE tenant = :tenant AND state = 'pending' AND next_attempt_at <= :now AND deadline > :now
ORDER BY deadline, id LIMIT :limit;

-- name: lease_delivery
UPDATE deliveries
SET state = 'sending', lease_owner = :owner, lease_until = :lease_until, attempts = attempts + 1
WHERE id = :id AND state = 'pending';

-- name: claim_details
SELECT d.id, d.tenant, d.wait_id, d.deadline, d.attempts, d.ambiguous, w.key, w.token_key_id,
       w.token_blob, w.job, w.metadata, e.event_id, e.source, e.status, e.data, e.received_at,
       d.claim_check, e.content_type, e.blob, b.size
FROM deliveries d
JOIN waits w ON w.id = d.wait_id
JOIN events e ON e.id = d.event_row
LEFT JOIN blobs b ON b.sha256 = e.blob
WHERE d.id = :id;

-- name: record_send
INSERT INTO sends (credential, sent_at) VALUES (:credential, :now);

-- name: recent_sends
SELECT sent_at FROM sends WHERE credential = :credential AND sent_at > :since ORDER BY sent_at;

-- name: settle_delivery
UPDATE deliveries
SET state = :state, reason = :reason, last_status = :last_status,
    next_attempt_at = COALESCE(:retry_at, next_attempt_at),
    ambiguous = MAX(ambiguous, :ambiguous), attempts = attempts - :refund,
    claim_check = MAX(claim_check, :claim_check),
    finished_at = :finished_at, lease_owner = NULL, lease_until = NULL
WHERE id = :id AND state = 'sending' AND lease_owner = :owner AND attempts = :attempt;
-- :attempt fences the lease to one claim: after a reclaim, the same process may hold the row
-- again under a later attempt, and the earlier attempt's answer must not settle it.

-- name: reclaim_leases
UPDATE deliveries
SET state = 'pending', ambiguous = 1, lease_owner = NULL, lease_until = NULL,
    next_attempt_at = :now
WHERE state = 'sending' AND lease_until < :now;

-- name: deliveries_to_expire
SELECT d.id, d.tenant, w.key, e.event_id, e.source, d.attempts, d.last_status, e.received_at
FROM deliveries d
JOIN waits w ON w.id = d.wait_id
JOIN events e ON e.id = d.event_row
WHERE d.tenant = :tenant AND d.state = 'pending' AND d.deadline <= :now
ORDER BY d.deadline, d.id LIMIT :limit;

-- name: pending_tenants
-- The tenants with pending deliveries, one seek of deliveries_due each (a loose index scan):
-- the sweep then reads each one's expired rows from the index in deadline order, where one
-- query across tenants read every pending row and sorted them, however few were expired.
WITH RECURSIVE t (tenant) AS (
    SELECT MIN(tenant) FROM deliveries WHERE state = 'pending'
    UNION ALL
    SELECT (SELECT MIN(tenant) FROM deliveries WHERE state = 'pending' AND tenant > t.tenant)
    FROM t WHERE t.tenant IS NOT NULL
)
SELECT tenant FROM t WHERE tenant IS NOT NULL;

-- name: expire_delivery
UPDATE deliveries SET state = 'expired', reason = :reason, finished_at = :now
WHERE id = :id AND state = 'pending';

-- name: expire_waits
-- At most :limit of them, the longest expired first (the waits_expiry index's order).
UPDATE waits SET state = 'expired', resolved_at = :now
WHERE id IN (SELECT id FROM waits WHERE state = 'open' AND expires_at <= :now
             ORDER BY expires_at LIMIT :limit)
RETURNING tenant, key;

-- name: expire_wait
-- One open wait past its expiry that the sweep has not reached yet.
UPDATE waits SET state = 'expired', resolved_at = :now
WHERE id = :wait_id AND state = 'open' AND expires_at <= :now;

-- name: expire_buffered
UPDATE events SET state = 'unmatched'
WHERE id IN (SELECT id FROM events WHERE state = 'buffered' AND buffer_until < :now
             ORDER BY buffer_until LIMIT :limit)
RETURNING tenant, source, event_id, key;

-- name: forget_sends
DELETE FROM sends WHERE sent_at < :before;

-- name: pause_tenant
INSERT INTO tenant_pauses (tenant, until, reason) VALUES (:tenant, :until, :reason)
ON CONFLICT (tenant) DO UPDATE SET until = MAX(until, excluded.until), reason = excluded.reason;

-- name: active_pauses
SELECT tenant, until, reason FROM tenant_pauses WHERE until > :now;

-- name: forget_pauses
DELETE FROM tenant_pauses WHERE until <= :now;

-- name: count_active
-- The rows still in flight, each state counted through its partial index: the cost follows
-- the work in hand, not the history (finished rows are counted by the *_total counters).
SELECT 'waits' AS kind, 'open' AS state, COUNT(*) FROM waits WHERE state = 'open'
UNION ALL SELECT 'events', 'buffered', COUNT(*) FROM events WHERE state = 'buffered'
UNION ALL SELECT 'deliveries', 'pending', COUNT(*) FROM deliveries WHERE state = 'pending'
UNION ALL SELECT 'deliveries', 'sending', COUNT(*) FROM deliveries WHERE state = 'sending'
UNION ALL SELECT 'watches', 'active', COUNT(*) FROM watches WHERE state = 'active';

-- name: insert_watch
INSERT INTO watches (wait_id, tenant, key, kind, connection, spec, state, next_poll_at, updated_at)
VALUES (:wait_id, :tenant, :key, :kind, :connection, :spec, 'active', :now, :now);

-- name: due_watches
SELECT w.id FROM watches w JOIN waits x ON x.id = w.wait_id
WHERE w.state = 'active' AND w.next_poll_at <= :now AND x.state = 'open'
  AND (w.lease_until IS NULL OR w.lease_until < :now)
ORDER BY w.next_poll_at LIMIT :limit;

-- name: lease_watch
UPDATE watches SET lease_owner = :owner, lease_until = :lease_until, polls = polls + 1
WHERE id = :id
RETURNING id, wait_id, tenant, key, kind, connection, spec, polls, failures, job_status,
          last_error;

-- name: watch_polled
UPDATE watches
SET next_poll_at = :next_poll_at, failures = :failures,
    job_status = COALESCE(:job_status, job_status),  -- a failed poll keeps the last one seen
    progress = COALESCE(:progress, progress), last_error = :last_error,
    lease_owner = NULL, lease_until = NULL, updated_at = :now
WHERE id = :id AND lease_owner = :owner;

-- name: watch_done
UPDATE watches
SET state = 'done', job_status = :job_status, progress = COALESCE(:progress, progress),
    last_error = NULL, lease_owner = NULL, lease_until = NULL, updated_at = :now
WHERE id = :id;

-- name: closed_watches
SELECT w.id, w.wait_id, w.tenant, w.key, w.kind, w.connection, w.spec, w.polls, w.failures,
       x.state
FROM watches w JOIN waits x ON x.id = w.wait_id
WHERE w.state = 'active' AND x.state != 'open'
  AND w.id NOT IN (SELECT value FROM json_each(:busy))  -- being cancelled, or backing off
  -- a connection whose system said 429: only its watches that need no cancellation
  AND NOT (w.connection IN (SELECT value FROM json_each(:held))
           AND x.state IN ('expired', 'cancelled')
           AND COALESCE(w.spec ->> 'cancel_on_close', 0))
ORDER BY w.id LIMIT :limit;

-- name: stop_watch
UPDATE watches SET state = 'stopped', lease_owner = NULL, lease_until = NULL, updated_at = :now
WHERE id = :id AND state = 'active';

-- name: watch_of_wait
SELECT kind, connection, state, job_status, progress, polls, last_error, updated_at
FROM watches WHERE wait_id = :wait_id;

-- name: keep_blob
-- Never over a fresh deletion mark (keep_until < 0: minus the time it was marked): a collector,
-- maybe in another process, is deleting the bytes, and the writer waits for the row to go. A
-- mark older than :abandoned_before was left by a collector that died (a failing one lifts its
-- own, and each deletion renews it): lifted.
INSERT INTO blobs (sha256, size, content_type, created_at, keep_until)
VALUES (:sha256, :size, :content_type, :now, :keep_until)
ON CONFLICT (sha256) DO UPDATE SET keep_until = MAX(keep_until, excluded.keep_until)
WHERE blobs.keep_until > 0 OR -blobs.keep_until < :abandoned_before;

-- name: collectable_blobs
-- Past every URL's expiry, and no buffered event or unfinished delivery still needs the bytes.
SELECT b.sha256 FROM blobs b
WHERE b.keep_until < :now AND NOT EXISTS (
    SELECT 1 FROM events e LEFT JOIN deliveries d ON d.event_row = e.id
    WHERE e.blob = b.sha256 AND (e.state = 'buffered' OR d.state IN ('pending', 'sending')))
ORDER BY b.keep_until LIMIT :limit;

-- name: condemn_blob
-- keep_until = -(the time of marking) marks a blob whose bytes are being deleted; a crash
-- leaves it collectable, and marking it again takes the new time: a writer lifts only a mark
-- no deletion has renewed for a while (see keep_blob), never one a deletion is under.
UPDATE blobs SET keep_until = -:now
WHERE sha256 = :sha256 AND keep_until < :now AND NOT EXISTS (
    SELECT 1 FROM events e LEFT JOIN deliveries d ON d.event_row = e.id
    WHERE e.blob = blobs.sha256 AND (e.state = 'buffered' OR d.state IN ('pending', 'sending')));

-- name: forget_blob
DELETE FROM blobs WHERE sha256 = :sha256 AND keep_until <= 0;

-- name: spare_blob
UPDATE blobs SET keep_until = :now WHERE sha256 = :sha256 AND keep_until <= 0;

-- Set-based ingest of a consumer's batch (gateway/store/correlation.py). A list travels as one
-- JSON array parameter, read with json_each, so that each query stays one static text. The
-- statements run by executemany take positional parameters, in the order of the column list:
-- binding a tuple per row costs a fraction of looking each name up in a dict.

-- name: known_events
SELECT event_id, id FROM events
WHERE tenant = :tenant AND source = :source
  AND event_id IN (SELECT value FROM json_each(:event_ids));

-- name: latest_waits
-- The latest wait of each key: its id from the (tenant, key, id) index, then the row by id.
SELECT k.value, w.id, w.state, w.expires_at
FROM json_each(:keys) AS k
JOIN waits AS w ON w.id = (
    SELECT id FROM waits WHERE tenant = :tenant AND key = k.value ORDER BY id DESC LIMIT 1
);

-- name: last_ids
-- The largest rowids of events and deliveries, from which a batch numbers its new rows.
SELECT (SELECT COALESCE(MAX(id), 0) FROM events), (SELECT COALESCE(MAX(id), 0) FROM deliveries);

-- name: insert_event_rows
-- '' stands for NULL: the sqlite3 module binds None only after its adaptation protocol, which
-- raises and clears an AttributeError each time (~3,300 instructions per value).
INSERT INTO events (id, tenant, source, event_id, key, status, data, state, wait_id,
                    received_at, occurred_at, buffer_until, blob, content_type)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULLIF(?, ''), ?, NULLIF(?, ''), NULLIF(?, ''), NULLIF(?, ''), ?);

-- name: delete_events_after
-- A batch's rows inserted before one of its events met its stored copy (see _record_all).
DELETE FROM events WHERE id > :id;

-- name: count_duplicate_rows
UPDATE events SET duplicates = duplicates + ? WHERE id = ?;

-- name: resolve_waits_at
-- Each at the time its event was received (HTTP events merged by the writer each have their
-- own): :waits is a JSON array of [wait_id, event_row] pairs, the events inserted already.
-- Row ids rather than times: Python spells a float in JSON at several times the cost of an int.
UPDATE waits SET state = 'resolved',
    resolved_at = (SELECT received_at FROM events WHERE id = w.value ->> 1)
FROM json_each(:waits) AS w
WHERE waits.id = w.value ->> 0 AND waits.state = 'open';

-- name: insert_delivery_rows
INSERT INTO deliveries (id, tenant, wait_id, event_row, state, deadline, next_attempt_at,
                        created_at)
VALUES (?, ?, ?, ?, 'pending', ?, ?, ?);
