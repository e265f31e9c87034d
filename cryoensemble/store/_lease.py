"""One writer at a time: a lease object in the store, renewed while its holder runs.

The lease (`cryoensemble-lease.json` at the root) names the holder (host, pid, start
time) and when it was last renewed. Another run refuses while the lease is live; a lease
whose holder is gone (same host, no such process) or that was not renewed within its
time to live is taken over. On a local disk a store without a lease gets one atomically
(created only if absent). Object stores have no portable compare-and-swap, nor has taking
over a stale lease: there a taker writes its lease, waits briefly and reads it back; of
two racing takers, the one whose token is not read back refuses.
"""

import dataclasses
import json
import os
import socket
import threading
import time
import uuid

from ..errors import StoreLeaseError
from ._location import StoreLocation


LEASE = "cryoensemble-lease.json"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclasses.dataclass
class StoreLease:
    """The writer lease of one store, held by this process (see `acquire_lease`).

    Use as a context manager: a daemon thread renews it every third of its time to live;
    leaving releases it.
    """

    location: StoreLocation
    token: str
    started: float
    ttl: float
    _stop: threading.Event = dataclasses.field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = dataclasses.field(default=None, repr=False)

    def document(self) -> bytes:
        return json.dumps({
            "host": socket.gethostname(), "pid": os.getpid(), "token": self.token,
            "started": self.started, "renewed": time.time(), "ttl_s": self.ttl,
        }).encode()

    def renew(self) -> None:
        self.location.put(LEASE, self.document())

    def __enter__(self) -> "StoreLease":
        def loop():
            while not self._stop.wait(self.ttl / 3):
                try:
                    self.renew()
                except Exception:  # noqa: BLE001 - a missed renewal is retried next period
                    pass

        self._thread = threading.Thread(target=loop, name="cryoensemble-lease", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> bool:
        self.release()
        return False

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        holder = read_lease(self.location)
        if holder is not None and holder.get("token") == self.token:
            self.location.delete([LEASE])


def read_lease(location: StoreLocation) -> dict | None:
    data = location.get(LEASE)
    if data is None:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None  # torn by a killed writer: nobody holds it


def describe_holder(holder: dict) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return f"pid {holder.get('pid')} on {holder.get('host')} since {started}"


def _is_live(holder: dict, ttl: float) -> bool:
    renewed = float(holder.get("renewed", 0))
    if time.time() - renewed > float(holder.get("ttl_s", ttl)):
        return False
    if holder.get("host") == socket.gethostname():
        return _pid_alive(int(holder.get("pid", -1)))
    return True


def acquire_lease(location: StoreLocation, ttl_s: float, settle_s: float = 0.2) -> StoreLease:
    """Take the store's writer lease, or raise `StoreLeaseError` naming the live holder.
    Returns the lease (enter it to keep it renewed).

    **Arguments:**

    - `location`: the store.
    - `ttl_s`: the lease's time to live, s (renewed every third of it); the distributed
      layer passes `cryoensemble.store.lease-ttl` from dask config.
    - `settle_s`: how long a taker waits before reading its lease back.
    """
    ttl = float(ttl_s)
    holder = read_lease(location)
    if holder is not None and _is_live(holder, ttl):
        raise StoreLeaseError(
            f"{location.url}: another render is writing this store ({describe_holder(holder)}); "
            f"wait for it, or stop it"
        )
    lease = StoreLease(location, uuid.uuid4().hex, time.time(), ttl)
    if holder is None:
        # No lease yet: on a local disk, creating it only if absent decides at once.
        created = location.create_new(LEASE, lease.document())
        if created:
            return lease
        if created is False:
            holder = read_lease(location)
            if holder is not None and _is_live(holder, ttl):
                raise StoreLeaseError(
                    f"{location.url}: another render took this store's lease at the same "
                    f"time ({describe_holder(holder)})"
                )
    lease.renew()
    time.sleep(settle_s)
    holder = read_lease(location)
    if holder is None or holder.get("token") != lease.token:
        raise StoreLeaseError(
            f"{location.url}: another render took this store's lease at the same time "
            f"({describe_holder(holder or {})})"
        )
    return lease
