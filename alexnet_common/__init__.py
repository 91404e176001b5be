"""What both halves of the project use and neither owns: atomic file writes and the small commands'
``key=value`` arguments. Imports nothing of the project (``data_prep`` and ``pipeline`` both import it)."""
