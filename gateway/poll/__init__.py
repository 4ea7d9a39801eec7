"""Pollers: the ingest path for job systems without webhooks (Alteryx Server v3, Pixxel).

A wait registered with ``watch`` gets a row in ``watches``; the poller leases due rows, asks the
job system, and when the job is terminal reports a completion event through ``Ingest`` like any
other source, so dedupe, buffering and delivery all apply.
"""
