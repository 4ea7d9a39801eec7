-- Two questions asked every second or so that read rows nobody wanted, more as the tables grow:
-- the poller's "active watches of closed waits" read every watch ever registered, done and
-- stopped ones included (9 ms at 200,000 watches, on the writer); a lane's claim found nothing
-- due only after reading every pending delivery waiting out a retry delay (16 ms at 200,000,
-- on the writer, once per match in an outage). The claim now asks this index first.
CREATE INDEX watches_active ON watches (id) WHERE state = 'active';
CREATE INDEX deliveries_next ON deliveries (tenant, next_attempt_at) WHERE state = 'pending';
