"""Helpers the tests share (importable as ``support.*``: pytest puts tests/ on sys.path, see pyproject.toml)."""
