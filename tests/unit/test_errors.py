"""What an error says when it is logged."""

from __future__ import annotations

from gateway.blobs.base import BlobError
from gateway.errors import described


def test_an_error_is_described_with_what_its_cause_said() -> None:
    """The S3 store wraps the client's error (``raise BlobError(…) from exc``): its own
    message named only the blob, and the log's detail repeated it without the reason."""
    wrapped = BlobError("cannot delete blob ab12")
    wrapped.__cause__ = PermissionError("AccessDenied: not allowed to delete")
    assert described(wrapped) == "cannot delete blob ab12: AccessDenied: not allowed to delete"
    assert described(ValueError("alone")) == "alone"
