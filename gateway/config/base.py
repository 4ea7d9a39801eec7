"""The base of every settings section: strict (unknown keys are errors), immutable, and finite:
an infinite duration or size passed every bound (``gt=0``) and crashed later, where it was
used (``blobs.url_grace_s = inf`` made every claim check raise)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
