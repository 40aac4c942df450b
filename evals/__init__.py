"""The eval harness: scripted conversations (YAML suites) replayed against the service.

``cases`` holds the case format, ``runner`` runs cases in a mode (offline, stub, live,
replay) against a target (in-process or ``--url``), ``fake_openai`` is the fake provider
for stubbed and recorded runs, ``checks`` / ``metrics`` / ``report`` judge and report, and
``cli`` is ``supportgraph eval``.
"""
