"""The store: the one layer that owns every query. Callers see ``Store`` and its records."""

from gateway.store.base import Store
from gateway.store.factory import open_store

__all__ = ["Store", "open_store"]
