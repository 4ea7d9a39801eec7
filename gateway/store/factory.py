"""Builds the store named by ``[store] url``."""

from __future__ import annotations

from gateway.config.settings import StoreSettings
from gateway.store.base import Store
from gateway.store.sqlite import SQLiteStore


def open_store(settings: StoreSettings) -> Store:
    """An unopened store for the configured URL; the caller owns its lifecycle."""
    return SQLiteStore(
        settings.sqlite_path,
        synchronous=settings.sqlite_synchronous,
        cache_mb=settings.sqlite_cache_mb,
    )
