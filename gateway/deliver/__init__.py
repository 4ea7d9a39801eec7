"""Deliver: drain the outbox at the rate limit, shape each request, classify each answer."""
