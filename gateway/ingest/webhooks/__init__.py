"""Webhook sources: who may post (``verify``), where the fields are (``pointer``, ``mapping``)."""
