"""``[blobs]``: where claim-check payloads live (DESIGN 5.3). Their URLs' keys: ``keys.py``.

A payload too large for one Workato request is stored as a blob and replaced by a signed,
expiring URL that the resumed action downloads.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, field_validator, model_validator

from gateway.config.base import Section
from gateway.config.secrets import Secret

DEFAULT_BLOBS_URL = "file:///.data/blobs"
DEFAULT_URL_GRACE_S = 7 * 24 * 3600.0
MAX_URL_GRACE_S = 365 * 24 * 3600.0
"""A URL's expiry is a date: a year past the wait's deadline is plenty, and 1e12 s is none."""
_FILE = "file:///"
_S3 = "s3://"
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_URL_FORMS = "file:///relative/path, file:////absolute/path or s3://bucket[/prefix]"


class BlobSettings(Section):
    url: str = DEFAULT_BLOBS_URL
    """``file:///`` then a path, relative to the working directory unless it starts with ``/``
    (like ``store.url``), or ``s3://bucket/prefix``."""
    public_base_url: str | None = None
    """How Workato reaches ``GET /v1/blobs`` (e.g. ``https://gw.example.com``); unset: derived
    from the server's host and port."""
    url_grace_s: float = Field(default=DEFAULT_URL_GRACE_S, gt=0, le=MAX_URL_GRACE_S)
    """A signed URL stays valid until its wait's expiry plus this."""
    gc_interval_s: float = Field(default=60.0, gt=0)
    """How often blobs that nothing needs any more are looked for and deleted."""
    presign: bool = False
    """s3 only: hand out S3 presigned URLs (SigV4 caps them at 7 days) instead of gateway URLs."""
    s3_endpoint_url: str | None = None
    """An S3-compatible server (MinIO, moto); path-style addressing is used with it."""
    s3_region: str = "us-east-1"
    s3_access_key_id: Secret | None = None
    s3_secret_access_key: Secret | None = None
    """Both or neither; neither: the AWS default credential chain (environment, role)."""

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        if url.startswith(_FILE) and len(url) > len(_FILE):
            return url
        if url.startswith(_S3) and _BUCKET.match(url[len(_S3) :].split("/", 1)[0]):
            return url
        raise ValueError(f"url must be {_URL_FORMS}")

    @field_validator("public_base_url")
    @classmethod
    def _http_base(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError("public_base_url must start with http:// or https://")
        return url.rstrip("/") if url else url

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.presign and self.kind != "s3":
            raise ValueError("presign needs an s3:// url")
        if (self.s3_access_key_id is None) != (self.s3_secret_access_key is None):
            raise ValueError("give both s3_access_key_id and s3_secret_access_key, or neither")
        return self

    @property
    def kind(self) -> Literal["file", "s3"]:
        return "file" if self.url.startswith(_FILE) else "s3"

    @property
    def file_root(self) -> Path:
        return Path(self.url.removeprefix(_FILE))

    @property
    def s3_bucket(self) -> str:
        return self.url.removeprefix(_S3).split("/", 1)[0]

    @property
    def s3_prefix(self) -> str:
        """The key prefix without leading or trailing slashes; may be empty."""
        rest = self.url.removeprefix(_S3).partition("/")[2]
        return rest.strip("/")
