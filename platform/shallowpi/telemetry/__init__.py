"""Live status between processes: the recorder or executor publishes, dashboards subscribe.

The publisher never blocks its control loop: it keeps the latest status and a sender
thread delivers it; a slow subscriber skips statuses, it never slows the loop.

- status.py     what is published (RecorderStatus) and what a dashboard sends (Command)
- transport.py  TelemetryPublisher / TelemetrySubscriber over a Unix socket or loopback
                TCP, and StatusMailbox for a reader in the same process
- thumbnail.py  a camera frame shrunk to a Thumbnail for the dashboard
"""
