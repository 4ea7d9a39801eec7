-- Two questions asked every second or so that read rows nobody wanted, more as the tables grow:
-- the poller's "active watches of closed waits" read every watch ever registered, done and
-- stopped ones included (9 ms at 200,000 watches, on the writer); a lane's claim read, in
-- deadline order, every pending delivery waiting out a retry delay ahead of a due one (16 ms
-- at 200,000, on the writer, once per match when Workato refuses connections). A claim now
-- reads the due rows from deliveries_next (queries.sql, due_few).
CREATE INDEX watches_active ON watches (id) WHERE state = 'active';
CREATE INDEX deliveries_next ON deliveries (tenant, next_attempt_at) WHERE state = 'pending';
