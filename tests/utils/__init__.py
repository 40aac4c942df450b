"""Test helpers: database URLs, OpenAI-compatible response builders, app clients."""
