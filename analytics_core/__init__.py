"""Shared code every deployable imports: settings, the canonical event model, topic names, clients."""
