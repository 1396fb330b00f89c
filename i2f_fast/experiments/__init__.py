"""User-facing jobs behind the ``i2f-fast`` commands (DESIGN.md §2): each returns a JSON-ready dict."""
