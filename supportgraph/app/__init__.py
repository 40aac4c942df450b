"""The application: one customer turn (the conversation service) and the agents' side.

Services orchestrate the graph and the ports; which adapters, model and pack they get is
decided at the edges (``supportgraph.wiring``).
"""
