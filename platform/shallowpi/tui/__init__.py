"""Textual dashboards. They only read telemetry and send commands through a sink."""
