"""Teleoperation recording: the fixed-rate loop, episode flow, and the background writer."""
