"""Ingest: validate what arrives, persist it, and say what happened to it."""
