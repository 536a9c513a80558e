"""The daemon's Unix domain socket for local marker intake: where it goes and who may connect.

Local trainer ranks send markers through a socket file instead of the network; its file mode
(0660) and group say who may. The default path ("auto"):
  $XDG_RUNTIME_DIR/parawatt/marker.sock   when XDG_RUNTIME_DIR is set (a per-user daemon), else
  /run/parawatt/marker.sock               when /run/parawatt exists and is writable (made by the
                                          systemd unit's RuntimeDirectory or deploy/tmpfiles.d),
and no socket otherwise. With "auto" a socket that another live daemon holds is left alone (one
line, no socket); an explicit path that is in use is an error.
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import socket
import stat

from power_daemon.errors import ConfigError

log = logging.getLogger(__name__)

AUTO = "auto"
SOCKET_NAME = "marker.sock"
SYSTEM_DIR = "/run/parawatt"
SOCKET_MODE = 0o660
MAX_PATH_BYTES = 107  # sun_path on Linux, less its NUL


def default_path(env: dict | None = None) -> str | None:
    env = os.environ if env is None else env
    runtime = env.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isdir(runtime):
        return os.path.join(runtime, "parawatt", SOCKET_NAME)
    if os.path.isdir(SYSTEM_DIR) and os.access(SYSTEM_DIR, os.W_OK | os.X_OK):
        return os.path.join(SYSTEM_DIR, SOCKET_NAME)
    return None


def group_id(name: str) -> int:
    try:
        return int(name) if name.isdigit() else grp.getgrnam(name).gr_gid
    except KeyError:
        raise ConfigError(f"--marker-socket-group: no group named {name!r}") from None


def _in_use(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(path)
            return True
        except OSError:
            return False


def prepare(path: str, auto: bool) -> str | None:
    """Make `path` bindable: create its directory (auto only), remove a stale socket left by a
    daemon that was killed. -> the path, or None when (auto) the socket is someone else's."""
    if len(os.fsencode(path)) > MAX_PATH_BYTES:
        raise ConfigError(f"--marker-socket {path!r} is longer than {MAX_PATH_BYTES} bytes")
    directory = os.path.dirname(path) or "."
    if auto:
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory, 0o755)
    if not os.path.isdir(directory):
        raise ConfigError(f"--marker-socket {path!r}: directory {directory!r} does not exist")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return path
    except OSError as e:
        raise ConfigError(f"--marker-socket {path!r}: {e.strerror or e}") from None
    if not stat.S_ISSOCK(st.st_mode):
        raise ConfigError(f"--marker-socket {path!r} exists and is not a socket; not touching it")
    if _in_use(path):
        if auto:
            log.warning("marker socket %s is in use by another daemon; no local socket", path)
            return None
        raise ConfigError(f"--marker-socket {path!r} is in use by another daemon")
    os.unlink(path)  # stale: its daemon is gone
    return path


def restrict(path: str, group: int | None) -> None:
    """Mode 0660 and the marker group: only the daemon's user and that group may connect."""
    try:
        if group is not None:
            os.chown(path, -1, group)
        os.chmod(path, SOCKET_MODE)
    except OSError as e:
        raise ConfigError(
            f"cannot set the group or mode of marker socket {path!r}: {e.strerror or e} "
            "(the daemon's user must be a member of --marker-socket-group)"
        ) from None


def remove(path: str, inode: int) -> None:
    """Remove our socket file at shutdown (gRPC does only for a server that was started), but
    not one that another daemon has bound at the same path since."""
    with contextlib.suppress(OSError):
        if os.lstat(path).st_ino == inode:
            os.unlink(path)
