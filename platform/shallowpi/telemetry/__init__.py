"""Live status between processes: the recorder or executor publishes, dashboards subscribe.

The publisher never blocks its control loop: it keeps the latest status and a sender
thread delivers it; a slow subscriber skips statuses, it never slows the loop.

- status.py     what the recorder publishes (RecorderStatus), the parts every status kind
                shares (CameraStatus, LoopStatus, Thumbnail), what a dashboard sends (Command)
- envelope.py   any status kind on the wire: {"kind", "seq", "status"}, STATUS_TYPES
- transport.py  the ZeroMQ protocol: sockets, messages, shared limits
- publisher.py  TelemetryPublisher, the recorder's and executor's side
- subscriber.py TelemetrySubscriber, a dashboard's side
- address.py    where: a Unix socket (by default one per user and robot) or loopback TCP
- mailbox.py    StatusMailbox, the same latest-wins handoff to a reader in this process
- thumbnail.py  a camera frame shrunk to a Thumbnail for the dashboard
"""
