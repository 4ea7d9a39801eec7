"""The one place that turns ``[blobs] url`` into a store."""

from __future__ import annotations

from pathlib import Path

from gateway.blobs.base import BlobStore
from gateway.blobs.files import FileBlobStore
from gateway.blobs.s3 import S3BlobStore
from gateway.config.blobs import BlobSettings


def blob_store(settings: BlobSettings, data_dir_base: Path | None = None) -> BlobStore:
    """The store ``settings.url`` names; a relative file root is taken from ``data_dir_base``
    (the working directory when None)."""
    if settings.kind == "s3":
        return S3BlobStore(settings)
    root = settings.file_root
    if data_dir_base is not None and not root.is_absolute():
        root = data_dir_base / root
    return FileBlobStore(root)
