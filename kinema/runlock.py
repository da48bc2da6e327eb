"""One writer per run directory: ``OUT/.lock``, held by the training process for as long as it runs.

Two ``kinema train`` on the same ``--out`` would overwrite each other's checkpoints and interleave one
``metrics.jsonl``; the second is refused at once, naming the holder. The lock file holds JSON
``{pid, host, started}`` and is held with ``fcntl.flock``, which the kernel drops when the process
dies however it dies, so a lock left by a killed run is recognised as stale and reclaimed (with a
message). The file's mtime is a heartbeat (:meth:`RunLock.beat`): some cluster filesystems keep
flock local to each node, so a record from another host is only reclaimed once its heartbeat is
older than :data:`STALE_AFTER`. Without flock (not POSIX) a same-host holder is judged by its PID.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
import sys
import time
from pathlib import Path

from kinema.errors import TrainingError

try:
    import fcntl
except ImportError:  # Windows: PID/host checks only
    fcntl = None

LOCK_NAME = ".lock"
STALE_AFTER = 30 * 60  # seconds without a heartbeat after which another host's lock counts as stale
BEAT_EVERY = 60  # seconds between heartbeats


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return True
    return True


def _try_flock(fd: int) -> bool | None:
    """True: locked; False: another open file holds it; None: this filesystem has no flock."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return False
        return None  # ENOLCK, EOPNOTSUPP, ...: judge by the record


class RunLock:
    """The lock on ``run_dir`` (created by :meth:`acquire`, dropped by :meth:`release`)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self.fd: int | None = None
        self._last_beat = 0.0

    @staticmethod
    def _read(fd: int) -> dict:
        os.lseek(fd, 0, os.SEEK_SET)
        try:
            record = json.loads(os.read(fd, 4096).decode() or "{}")
        except (ValueError, UnicodeDecodeError):
            return {}
        return record if isinstance(record, dict) else {}

    def _refuse(self, holder: dict, why: str) -> TrainingError:
        who = f"process {holder.get('pid', '?')} on host {holder.get('host', '?')}"
        since = f", running since {holder['started']}" if holder.get("started") else ""
        return TrainingError(
            f"{self.path.parent} is in use by another training run ({who}{since}; {why}): two runs in one --out "
            f"would overwrite each other's checkpoints. Choose another --out; if you are sure no run uses it "
            f"(e.g. that job was killed), delete {self.path}")

    def acquire(self, warn=None) -> "RunLock":
        """Take the lock or raise :class:`TrainingError` naming the holder; ``warn(message)`` reports
        a stale lock that was reclaimed."""
        here = socket.gethostname()
        for _ in range(5):  # retried only when the file was replaced under us
            try:  # never through a link: the record would overwrite the file it points at
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | os.O_NONBLOCK, 0o644)
            except OSError as exc:
                if exc.errno == errno.ELOOP or self.path.is_symlink():
                    raise TrainingError(f"{self.path} is a symbolic link (to {os.readlink(self.path)}); kinema writes "
                                        "its lock record there and deletes it at the end: remove the link") from None
                raise TrainingError(f"cannot create the lock {self.path}: {exc.strerror or exc}; remove what is "
                                    "there (the lock is a plain file kinema writes)") from None
            if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO or device: the lock record cannot be kept
                os.close(fd)
                raise TrainingError(f"{self.path} is not a regular file; remove it (the lock is a plain file kinema "
                                    "writes)")
            os.set_blocking(fd, True)
            try:
                locked = _try_flock(fd)
                holder = self._read(fd)
                if locked is False:
                    raise self._refuse(holder, "it holds the lock")
                try:  # the holder may have released and deleted the file between our open and flock
                    if os.fstat(fd).st_ino != os.stat(self.path).st_ino:
                        os.close(fd)
                        continue
                except FileNotFoundError:
                    os.close(fd)
                    continue
                pid, host = holder.get("pid"), holder.get("host")
                if holder and not (pid == os.getpid() and host == here):  # our own: an earlier Trainer of this process
                    if host != here:
                        age = time.time() - os.fstat(fd).st_mtime
                        if age < STALE_AFTER:
                            raise self._refuse(holder, f"its heartbeat is {age:.0f} s old; the lock cannot be "
                                                       "checked across hosts")
                        reason = f"no heartbeat for {age / 60:.0f} min"
                    elif locked is None and isinstance(pid, int) and _pid_alive(pid):
                        raise self._refuse(holder, "that process is running")
                    elif locked:
                        reason = "that process no longer holds it: it was killed before it could clean up"
                    else:
                        reason = "that process is no longer running"
                    if warn is not None:
                        warn(f"reclaiming the stale lock {self.path} of process {pid} on host {host} ({reason})")
                record = {"pid": os.getpid(), "host": here, "started": time.strftime("%Y-%m-%d %H:%M:%S %z")}
                os.ftruncate(fd, 0)
                os.lseek(fd, 0, os.SEEK_SET)
                os.write(fd, json.dumps(record).encode())
                os.fsync(fd)
            except BaseException:
                if fd is not None:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
                raise
            self.fd, self._last_beat = fd, time.monotonic()
            return self
        raise TrainingError(f"cannot take the lock {self.path}: it keeps being replaced by another process")

    def beat(self) -> None:
        """Refresh the heartbeat (the lock file's mtime), at most once per :data:`BEAT_EVERY` seconds."""
        if self.fd is not None and time.monotonic() - self._last_beat >= BEAT_EVERY:
            self._last_beat = time.monotonic()
            try:
                os.utime(self.path)
            except OSError:
                pass

    def check(self) -> None:
        """Raise :class:`TrainingError` unless the lock file is still the one this process holds: deleted or
        replaced (by a person, a cleanup script, or a second run that then took a new lock), another writer may
        be using the folder, and a checkpoint written now could interleave with its."""
        if self.fd is None:
            return
        try:
            ours = os.fstat(self.fd).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
            ours = False
        if not ours:
            raise TrainingError(
                f"the lock {self.path} of this run was deleted or replaced while the run held it, so another "
                f"training run may now be writing to {self.path.parent}; stopping before writing a checkpoint. "
                "Make sure only one run uses this --out, then resume with --resume")

    def release(self) -> None:
        """Delete the lock file and drop the lock (idempotent). Deleted first, so a waiting process
        never takes a file that is about to disappear (acquire re-checks the inode)."""
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass
        try:
            os.close(fd)  # drops the flock
        except OSError:
            pass

    def __del__(self) -> None:  # a Trainer dropped without fit() returning
        self.release()


def print_warning(message: str) -> None:
    print(f"kinema: warning: {message}", file=sys.stderr)
