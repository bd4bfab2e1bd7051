"""systemd notifications (sd_notify) over $NOTIFY_SOCKET, without a dependency.

Why keep-alives come from the fusion loop's liveness and not from a timer alone:
``WatchdogSec=`` exists to restart a runtime that hangs (a stuck engine, a
deadlock). A thread that pings on a timer would keep a hung process alive, so
``WATCHDOG=1`` is sent only while the fusion loop has produced a record recently.

The protocol: one datagram per message to the unix socket named in NOTIFY_SOCKET
(a leading "@" is an abstract socket); ``WATCHDOG_USEC`` gives the watchdog period.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Callable, Optional

log = logging.getLogger(__name__)


def notify(message: str) -> bool:
    """Send ``message`` (e.g. "READY=1") to systemd; False when not under systemd."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.setblocking(False)  # a receiver that does not read must not stall the caller
            s.sendto(message.encode(), addr)
        return True
    except OSError as exc:
        log.debug("sd_notify %r failed: %s", message, exc)
        return False


def watchdog_period() -> Optional[float]:
    """Seconds between keep-alives (half of WATCHDOG_USEC), or None without a watchdog."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid.isdigit() and int(pid) != os.getpid()):
        return None
    try:
        usec_i = int(usec)
    except ValueError:
        return None
    if usec_i <= 0:  # systemd never sets it so: not a watchdog (it became a 50 ms keep-alive storm)
        return None
    return min(max(usec_i / 2e6, 0.05), MAX_PERIOD_S)


MAX_PERIOD_S = 3600.0  # a wait past threading.TIMEOUT_MAX killed the keep-alive thread


class Keepalive:
    """Thread sending WATCHDOG=1 every period while ``alive()`` is true."""

    def __init__(self, alive: Callable[[], bool], stop: threading.Event, period: float) -> None:
        self.alive = alive
        self._stop = stop
        self.period = period
        self.sent = 0
        self.withheld = 0
        self._thread = threading.Thread(target=self._run, name="sd-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            if self.alive():
                if notify("WATCHDOG=1"):
                    self.sent += 1
            else:
                self.withheld += 1
                if self.withheld == 1:
                    log.error("fusion loop stalled: withholding systemd watchdog keep-alives (systemd restarts a hung runtime)")

    def join(self, timeout: float = 5.0) -> None:
        self._thread.join(timeout)
