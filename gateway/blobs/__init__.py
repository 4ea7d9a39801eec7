"""Claim-check blobs: payloads too large for one Workato request, stored by content hash and
fetched by the resumed action through a signed, expiring URL (DESIGN 5.3)."""
