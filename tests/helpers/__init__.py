"""The tests' one helpers package, imported as ``tests.helpers.<module>`` (pytest puts the repository root on
``sys.path``: ``pythonpath`` in pyproject.toml). Nothing here is collected as a test."""
