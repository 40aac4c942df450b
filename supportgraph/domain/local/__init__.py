"""The offline local mode: readings of a customer message that need no chat model."""
