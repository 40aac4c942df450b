"""The domain: what a support conversation is and the rules it follows, with no I/O of its own.

The pack, the conversation policy, slots, the output guard, personal data, FAQ retrieval, the
local (offline) mode and the model-call helpers, plus the types and the ports (``ports.py``)
that the layers above use and the adapters implement. Nothing here imports another layer.
"""
