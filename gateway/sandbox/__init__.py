"""Local emulators of the upstream APIs the gateway talks to.

They exist so tests, demos and `make run` can exercise real HTTP behaviour (limits, auth,
ambiguous failures) without a Workato, Alteryx or Pixxel account.
"""
