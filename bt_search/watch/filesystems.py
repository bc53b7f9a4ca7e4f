"""Which folders live on file systems that send no change events for changes made elsewhere (network shares):
a watcher polls those."""

from __future__ import annotations

import os

# NFS, SMB/CIFS, sshfs, 9p, ... : the local kernel sees only the changes made through this machine.
NETWORK_TYPES = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "9p",
        "afs",
        "ceph",
        "glusterfs",
        "lustre",
        "davfs",
        "fuse.sshfs",
        "fuse.rclone",
        "fuse.s3fs",
        "fuse.gcsfuse",
    }
)


def mount_types(mountinfo: str) -> dict[str, str]:
    """Mount point -> file-system type, from the text of /proc/self/mountinfo."""
    mounts = {}
    for line in mountinfo.splitlines():
        fields, _, rest = line.partition(" - ")
        parts = fields.split()
        if len(parts) >= 5 and rest:
            mounts[_unescape(parts[4])] = rest.split()[0]
    return mounts


def filesystem_type(path: str, mounts: dict[str, str]) -> str | None:
    """The type of the file system holding `path` (absolute, real): the innermost mount above it."""
    holding = [point for point in mounts if path == point or path.startswith(os.path.join(point, ""))]
    return mounts[max(holding, key=len)] if holding else None


def without_events(paths: list[str]) -> list[str]:
    """Those of `paths` (absolute, real) on a network file system; none where mounts cannot be read (not Linux)."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as handle:
            mounts = mount_types(handle.read())
    except OSError:
        return []
    return [path for path in paths if filesystem_type(path, mounts) in NETWORK_TYPES]


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash in paths as octal escapes (\\040 ...)."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field
