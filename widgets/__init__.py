"""Reusable Textual widgets; they import Textual and backends.models only."""
