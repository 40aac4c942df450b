"""The checkpoint serializer: msgpack with LangGraph's built-in allow-list only, no pickle.

A checkpoint row is data, never code. LangGraph's default serializer imports and builds any
class named in a stored checkpoint (with a warning); someone who can write to the checkpoint
tables could then run code in every worker that loads the thread. Our state holds only plain
values and LangChain messages, so the strict allow-list (``SAFE_MSGPACK_TYPES``) covers all of
it, and a blob naming anything else loads as ``None`` instead of being constructed.

This is passed to the savers explicitly rather than through ``LANGGRAPH_STRICT_MSGPACK``: that
variable is read once, when langgraph is first imported, so setting it from our code would
depend on import order.
"""

from __future__ import annotations

from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer


def strict_serializer() -> JsonPlusSerializer:
    """A serializer that builds only LangGraph's safe types and never falls back to pickle."""
    return JsonPlusSerializer(
        pickle_fallback=False, allowed_json_modules=None, allowed_msgpack_modules=None
    )
