"""Devices: Dynamixel servo buses (and, beside them, cameras).

Hardware knows nothing of robots, policies or recording: it speaks to devices in their own
units (ticks, bytes) and converts to SI only through an explicit calibration.
"""
