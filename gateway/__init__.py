"""resume-gateway: wakes suspended Workato jobs exactly once.

Data flow (DESIGN.md section 3): ``ingest`` (the HTTP API, Kafka, signed webhooks, and the
pollers of ``poll``) verifies and persists into ``store``, which correlates events with waits
inside one transaction and writes an outbox row; ``deliver`` drains the outbox at the tenant's
rate limit and calls Workato's ``POST /api/job/resume``. ``app`` is the composition root that
wires them together.
"""

__version__ = "0.2.13"
