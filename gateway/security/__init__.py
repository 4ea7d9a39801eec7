"""Keeping resume tokens and credentials secret: encryption at rest and log redaction."""
