"""One module per library the agent patches, each with ``patch()`` / ``unpatch()``."""
