-- The blob collector asks, per blob, whether an event's delivery is unfinished: without this
-- index each question scans every delivery.
CREATE INDEX deliveries_event ON deliveries (event_row);
