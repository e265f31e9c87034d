"""Where a store lives: a path or any fsspec URL, with its storage options.

Everything the store does outside zarr's own array reads and writes (listing, small
metadata objects, the lease, deletion) goes through the location's fsspec filesystem, so
local disks and object stores follow the same rules; "done" is decided from listings,
never from `os.path`.
"""

import contextlib
import dataclasses
import functools
import json
import os
import threading
import uuid
from typing import Any

from ..errors import StoreLocationError


_LOCAL = ("", "file", "local")


def _split_protocol(url: str) -> tuple[str, str]:
    if "://" in url:
        protocol, rest = url.split("://", 1)
        return protocol.lower(), rest
    return "", url


@dataclasses.dataclass(frozen=True)
class StoreLocation:
    """A store's URL and storage options (picklable and hashable, so Dask tasks carry it).

    **Arguments:**

    - `url`: an absolute local path, or a URL zarr-python opens through fsspec
      (`s3://bucket/x.zarr`, `gs://...`, `memory://...`, `file:///...`).
    - `options_json`: the storage options as canonical JSON (see `from_url`, which takes
      a dict). Credentials may also come from the usual environment (AWS_ENDPOINT_URL,
      AWS_ACCESS_KEY_ID, ...), which each process reads itself.
    """

    url: str
    options_json: str = "{}"

    @classmethod
    def from_url(cls, store, storage_options: dict[str, Any] | None = None) -> "StoreLocation":
        """A location from a path, a URL or another location (options merged)."""
        if isinstance(store, StoreLocation):
            if not storage_options:
                return store
            options = dict(store.storage_options, **storage_options)
            return cls(store.url, json.dumps(options, sort_keys=True))
        url = os.fspath(store)
        protocol, rest = _split_protocol(url)
        if protocol in _LOCAL:
            url = os.path.abspath(os.path.expanduser(rest))
        else:
            url = f"{protocol}://{rest.rstrip('/')}"
        try:
            options = json.dumps(storage_options or {}, sort_keys=True)
        except TypeError as error:
            raise StoreLocationError(f"{url}: storage options must be JSON values ({error})")
        return cls(url, options)

    def __str__(self) -> str:
        return self.url

    @property
    def storage_options(self) -> dict[str, Any]:
        return json.loads(self.options_json)

    @property
    def protocol(self) -> str:
        return _split_protocol(self.url)[0] or "file"

    @property
    def is_local(self) -> bool:
        return self.protocol == "file"

    def filesystem(self):
        """`(fsspec filesystem, root path)`; fsspec caches the instance per options."""
        import fsspec

        if self.is_local:
            return fsspec.filesystem("file"), self.url
        return fsspec.core.url_to_fs(self.url, **self.storage_options)

    def zarr_store(self, read_only: bool = False):
        """The zarr store object: `LocalStore` on a local disk, else `FsspecStore`."""
        import zarr

        if self.is_local:
            return zarr.storage.LocalStore(self.url, read_only=read_only)
        return zarr.storage.FsspecStore.from_url(
            self.url, storage_options=self.storage_options or None, read_only=read_only
        )

    def check(self) -> None:
        """One-line `StoreLocationError` unless the scheme is known, its fsspec driver is
        installed and the endpoint answers (a local parent folder, a bucket)."""
        import fsspec

        if not self.is_local:
            try:
                fsspec.get_filesystem_class(self.protocol)
            except ValueError:
                raise StoreLocationError(
                    f"{self.url}: unknown storage scheme {self.protocol!r} (fsspec knows "
                    f"{', '.join(sorted(fsspec.available_protocols())[:12])}, ...)"
                ) from None
            except ImportError as error:
                raise StoreLocationError(
                    f"{self.url}: scheme {self.protocol!r} needs a driver that is not "
                    f"installed ({_first_line(error)})"
                ) from None
        try:
            fs, root = self.filesystem()
            if self.is_local:
                if os.path.exists(root) and not os.path.isdir(root):
                    raise StoreLocationError(f"{self.url}: is a file, not a store directory")
                existing = root
                while not os.path.exists(existing):
                    existing = os.path.dirname(existing)
                if not os.path.isdir(existing):
                    raise StoreLocationError(f"{self.url}: {existing} is a file, not a directory")
                if not os.access(existing, os.W_OK | os.X_OK):
                    raise StoreLocationError(f"{self.url}: {existing} is not writable")
                return
            fs.invalidate_cache()
            if fs.exists(root):
                return
            head = root.split("/", 1)[0]
            if self.protocol in ("s3", "s3a", "gs", "gcs", "az", "abfs") and not fs.exists(head):
                raise StoreLocationError(f"{self.url}: bucket {head!r} does not exist or is not accessible")
        except StoreLocationError:
            raise
        except Exception as error:  # noqa: BLE001 - every driver has its own errors
            raise StoreLocationError(
                f"{self.url}: cannot reach the store ({type(error).__name__}: {_first_line(error)})"
            ) from None

    # Key-level operations (keys are relative to the root, '/'-separated).

    def full_path(self, key: str) -> str:
        _, root = self.filesystem()
        return f"{root}/{key}" if key else root

    def get(self, key: str) -> bytes | None:
        """The object's bytes, or None if it does not exist."""
        fs, root = self.filesystem()
        try:
            return fs.cat_file(f"{root}/{key}")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def put(self, key: str, data: bytes) -> None:
        """Write one object whole. Local files go through a temporary name, are fsynced
        and renamed, so a reader never sees a torn object; object stores put atomically."""
        fs, root = self.filesystem()
        path = f"{root}/{key}"
        if not self.is_local:
            fs.pipe_file(path, data)
            return
        with _durable_temporary(path, data) as temporary:
            os.replace(temporary, path)
        fsync_directory(os.path.dirname(path))

    def create_new(self, key: str, data: bytes) -> bool | None:
        """Write one local object whole only if none is there: True if this call created
        it, False if it existed, None where that cannot be decided atomically (object
        stores, or a filesystem without hard links). A temporary file is linked to the
        name, so the object appears complete and at most one of racing callers wins."""
        if not self.is_local:
            return None
        fs, root = self.filesystem()
        path = f"{root}/{key}"
        try:
            with _durable_temporary(path, data) as temporary:
                os.link(temporary, path)
        except FileExistsError:
            return False
        except OSError:
            return None
        fsync_directory(os.path.dirname(path))
        return True

    def list_keys(self, prefix: str = "") -> list[str]:
        """Every key under `prefix` (recursive), from the store's own listing."""
        fs, root = self.filesystem()
        base = f"{root}/{prefix}".rstrip("/")
        if not self.is_local:
            fs.invalidate_cache(base)
        try:
            found = fs.find(base)
        except FileNotFoundError:
            return []
        start = len(root.rstrip("/")) + 1
        return [_strip_protocol_path(p, root)[start:] for p in found]

    def top_level(self) -> list[str]:
        """Names directly under the root (objects and folders), or [] if there is none."""
        fs, root = self.filesystem()
        if not self.is_local:
            fs.invalidate_cache(root)
        try:
            entries = fs.ls(root, detail=False)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted({p.rstrip("/").rsplit("/", 1)[-1] for p in entries} - {""})

    def delete(self, keys) -> None:
        keys = list(keys)
        if not keys:
            return
        fs, root = self.filesystem()
        paths = [f"{root}/{key}" for key in keys]
        try:
            fs.rm(paths)
        except FileNotFoundError:
            for path in paths:
                if fs.exists(path):
                    fs.rm(path)

    def delete_folder(self, name: str) -> None:
        fs, root = self.filesystem()
        path = f"{root}/{name}"
        if fs.exists(path):
            fs.rm(path, recursive=True)


def _strip_protocol_path(path: str, root: str) -> str:
    # Local find() returns absolute paths; object stores return bucket/key.
    return path if path.startswith(root) else root + path[path.find(root) + len(root):]


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


@contextlib.contextmanager
def _durable_temporary(path: str, data: bytes):
    """A fsynced temporary file beside `path` holding `data` (its folder created), for
    the caller to rename or link to `path`; removed afterwards whatever happened."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = f"{path}.{uuid.uuid4().hex}.partial"
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        yield temporary
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def sync_files(paths) -> None:
    """Make local files durable, then their folders' entries: all fsyncs at once from the
    process's fsync threads, since a journaling filesystem commits concurrent fsyncs
    together (one after another, each file waits for a commit of its own). Missing files
    are skipped."""
    paths = list(paths)
    if not paths:
        return
    directories = sorted({os.path.dirname(p) for p in paths})
    if len(paths) == 1:
        _fsync_file(paths[0])
        fsync_directory(directories[0])
        return
    pool = _fsync_pool()
    list(pool.map(_fsync_file, paths))
    list(pool.map(fsync_directory, directories))


# Files written before their fsyncs start, at most: each is held open until fsynced.
_FSYNC_GROUP = 64


def write_files(files: dict, durable: bool) -> tuple[float, float]:
    """Write local files whole (`{path: bytes}`), creating their folders. With
    `durable`, each file is fsynced on the descriptor that wrote it and then the folders'
    entries, so that what is written after this returns never points at data a crash
    could lose.

    The calling thread writes the files one after another, and the process's fsync
    threads fsync them a group at a time: the fsyncs run at once (and share journal
    commits, as `sync_files`), while threads each writing files of their own would hand
    the GIL over at every system call, paid in futex system time.

    Returns the CPU time (user, system s) of the fsync threads (none without `durable`),
    for profiles that attribute host time; the calling thread's own is the caller's."""
    import concurrent.futures
    import resource

    if not files:
        return 0.0, 0.0
    spent, lock = [0.0, 0.0], threading.Lock()

    def measured(function, item) -> None:
        before = resource.getrusage(resource.RUSAGE_THREAD)
        try:
            function(item)
        finally:
            after = resource.getrusage(resource.RUSAGE_THREAD)
            with lock:
                spent[0] += after.ru_utime - before.ru_utime
                spent[1] += after.ru_stime - before.ru_stime

    pool = _fsync_pool() if durable else None
    directories: set = set()
    items = list(files.items())
    for first in range(0, len(items), _FSYNC_GROUP):
        written: list = []
        try:
            for path, data in items[first : first + _FSYNC_GROUP]:
                directory = os.path.dirname(path)
                if directory not in directories:
                    os.makedirs(directory, exist_ok=True)
                    directories.add(directory)
                descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
                written.append(descriptor)
                view = memoryview(data).cast("B")
                while view:
                    view = view[os.write(descriptor, view):]
            if pool is not None:
                fsyncs = [pool.submit(measured, os.fsync, d) for d in written]
                # Every fsync ends before any descriptor closes, failed or not.
                concurrent.futures.wait(fsyncs)
                for fsync in fsyncs:
                    fsync.result()
        finally:
            for descriptor in written:
                os.close(descriptor)
    if pool is not None:
        list(pool.map(functools.partial(measured, fsync_directory), sorted(directories)))
    return spent[0], spent[1]


_FSYNC_POOLS: dict = {}
_FSYNC_POOLS_LOCK = threading.Lock()


def _fsync_pool():
    """This process's fsync threads (started once, not per call; a forked child, whose
    copy has no threads, starts its own)."""
    import concurrent.futures

    with _FSYNC_POOLS_LOCK:
        pool = _FSYNC_POOLS.get(os.getpid())
        if pool is None:
            pool = concurrent.futures.ThreadPoolExecutor(
                16, thread_name_prefix="cryoensemble-fsync")
            _FSYNC_POOLS.clear()
            _FSYNC_POOLS[os.getpid()] = pool
        return pool


def _fsync_file(path: str) -> None:
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def fsync_directory(directory: str) -> None:
    """Make a local folder's entries (a renamed file) durable."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)

