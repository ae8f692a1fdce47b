"""Per-user private directories under the system temp dir (trust bundles, the ledger).

``/tmp`` is world-writable: a directory there with a fixed name could be created first
by another user (and then hold a planted trust store or a ledger they can rewrite). The
directory is therefore named per user, created 0700, and used only when it is a real
directory owned by this user that nobody else can write.
"""

from __future__ import annotations

import os
import stat
import tempfile


def private_temp_dir(name: str) -> str | None:
    """``<tempdir>/<name>_<uid>``, created 0700; None when an existing one is not safe
    (a symlink, another owner, or writable by group or others)."""
    directory = os.path.join(tempfile.gettempdir(), f"{name}_{os.getuid()}")
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        info = os.lstat(directory)
    except OSError:
        return None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
        return None
    return directory
