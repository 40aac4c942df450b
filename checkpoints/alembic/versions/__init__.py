"""Our tables' revisions, oldest first: ``sg0005_baseline``, then each change to the schema."""
