"""How shallowpi's log lines read, on stderr and in the log files a recording or a
deployment keeps (a base module: the CLI and the dashboards' log files use it alike)."""

from __future__ import annotations

import logging


class LogFormatter(logging.Formatter):
    """`2026-12-07T18:22:01.123+01:00 WARNING shallowpi.x: message`: the date and the local
    time with its UTC offset (ISO 8601), on stderr and in the log files a recording or a
    deployment keeps. A time of day alone could not be placed in a log read days later, nor
    beside a robot's or a server's log kept in UTC."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """The record's time as ISO 8601, local, to the millisecond, with the UTC offset."""
        from datetime import datetime

        return datetime.fromtimestamp(record.created).astimezone().isoformat(timespec="milliseconds")
