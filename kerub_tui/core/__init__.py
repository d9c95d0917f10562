"""The bottom layer: documents, the store, the change feed, paths. Imports nothing else of kerub_tui."""
