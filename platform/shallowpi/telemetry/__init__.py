"""Live status between processes: the recorder or executor publishes, dashboards subscribe.

The publisher never blocks its control loop: it keeps the latest status and a sender
thread delivers it; a slow subscriber skips statuses, it never slows the loop.
"""
