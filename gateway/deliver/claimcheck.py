"""Claim checks: a payload too big for the resume request is stored and handed out as a URL.

The URL must outlive the wait (the action may resume late and then download), so it expires at
the wait's deadline plus a grace period; the blob is kept at least that long (DESIGN 5.3).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from gateway.blobs.base import MAX_PRESIGN_S, BlobStore, meta_of
from gateway.blobs.reservation import reserve
from gateway.blobs.signing import UrlSigner
from gateway.clock import Clock
from gateway.deliver.payload import PayloadRef
from gateway.store.base import Store
from gateway.store.records import Claim

PATIENCE_S = 1.0
"""How long a claim check waits out a deletion under way; then the attempt is retried later.
Well inside the lease margin (``lane.LEASE_MARGIN_S``) that the request's timeout leaves."""


class ClaimChecks:
    """Stores a delivery's payload (if it is not stored yet) and signs a URL for it."""

    def __init__(
        self,
        blobs: BlobStore,
        store: Store,
        signer: UrlSigner,
        clock: Clock,
        public_base_url: Callable[[], str],
        *,
        grace_s: float,
        presign: bool = False,
    ) -> None:
        self._blobs = blobs
        self._store = store
        self._signer = signer
        self._public_base_url = public_base_url
        self._clock = clock
        self._grace_s = grace_s
        self._presign = presign

    async def reference(self, claim: Claim) -> PayloadRef:
        now = self._clock()
        expires_at = float(math.ceil(claim.deadline + self._grace_s))  # whole seconds, as signed
        meta = claim.blob
        if meta is None:  # the payload is in the event's row: store it now
            meta = meta_of(claim.data, claim.content_type)
        # the row first: bytes stored but never recorded could never be collected, and a
        # collector cannot take what is recorded (a short wait: the attempt holds a lease)
        await reserve(self._store, meta, expires_at, self._clock, patience_s=PATIENCE_S)
        if claim.blob is None:
            await self._blobs.put_bytes(claim.data, meta.content_type)
        url = None
        if self._presign:
            expires_at = min(expires_at, now + MAX_PRESIGN_S)
            url = await self._blobs.presigned_url(meta, expires_at - now)
        if url is None:
            # the signer's URLs are relative: the public address may be known only once bound
            url = self._public_base_url() + self._signer.url(
                meta.sha256, expires_at, meta.content_type
            )
        return PayloadRef(url, meta.size, meta.sha256, meta.content_type, expires_at)
