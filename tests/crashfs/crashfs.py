#!/usr/bin/env python3
"""crashfs: a FUSE file system that forgets, at a simulated power cut, everything a real disk
may lose: data written since the last fsync/fdatasync of its file, and names created, renamed
or removed since the last fsync of their directory.

    crashfs.py BACKING MOUNTPOINT

The tree in BACKING is loaded at start as the durable state and served at MOUNTPOINT from memory.
Two views are kept: the current one (what programs see) and the durable one (what survives a
power cut). fsync/fdatasync of a file makes its current data (and size, mode, times, extended
attributes) durable; fsync of a directory makes its current entries durable. Nothing else does:
no write-back, no journal ordering - the strictest model POSIX allows, stricter than ext4.

`syncfs` never reaches a FUSE file system, so it cannot be modelled here: a program that relies
on it for durability loses that data in this model, as it would on any FUSE file system (haul
makes each file durable with its own fdatasync on FUSE for that reason).

A power cut: writing anything to /.crashfs-cut (at the root of the mount) replaces BACKING's
content with the durable view, after which every operation fails with EIO; the caller then
unmounts, and mounting BACKING again shows exactly what survived.
"""

import errno
import os
import stat
import sys
import threading
import time

import mfusepy as fuse

CONTROL = "/.crashfs-cut"


class Inode:
    def __init__(self, kind, mode):
        self.kind = kind  # "file" or "dir"
        self.mode = mode
        self.data = bytearray()  # current contents (files)
        self.durable_data = b""
        self.entries = {}  # current entries (dirs): name -> Inode
        self.durable_entries = {}
        now = time.time_ns()
        self.mtime = now
        self.durable_mtime = now
        self.xattrs = {}
        self.durable_xattrs = {}

    def sync(self):
        if self.kind == "file":
            self.durable_data = bytes(self.data)
        else:
            self.durable_entries = dict(self.entries)
        self.durable_mtime = self.mtime
        self.durable_xattrs = dict(self.xattrs)


def load(path):
    """The tree at `path` as inodes whose durable and current states are the same."""
    info = os.lstat(path)
    if stat.S_ISDIR(info.st_mode):
        node = Inode("dir", stat.S_IMODE(info.st_mode))
        for name in sorted(os.listdir(path)):
            node.entries[name] = load(os.path.join(path, name))
    else:
        node = Inode("file", stat.S_IMODE(info.st_mode))
        with open(path, "rb") as f:
            node.data = bytearray(f.read())
    node.mtime = info.st_mtime_ns
    node.sync()
    return node


def dump(node, path):
    """Writes the durable view of `node` at `path` (which does not exist yet)."""
    if node.kind == "dir":
        os.mkdir(path, 0o755)
        for name, child in node.durable_entries.items():
            dump(child, os.path.join(path, name))
        os.chmod(path, node.mode)
    else:
        with open(path, "wb") as f:
            f.write(node.durable_data)
        os.chmod(path, node.mode)
        os.utime(path, ns=(node.durable_mtime, node.durable_mtime))


class CrashFs(fuse.Operations):
    use_ns = True

    def __init__(self, backing):
        self.backing = backing
        self.root = load(backing)
        self.handles = {}
        self.next_handle = 1
        self.cut = False
        self.mutex = threading.Lock()

    # --- paths and handles -------------------------------------------------------------------
    def _check(self):
        if self.cut:
            raise fuse.FuseOSError(errno.EIO)

    def _split(self, path):
        parent, _, name = path.rstrip("/").rpartition("/")
        return self._lookup(parent or "/"), name

    def _lookup(self, path):
        node = self.root
        for part in [p for p in path.split("/") if p]:
            if node.kind != "dir" or part not in node.entries:
                raise fuse.FuseOSError(errno.ENOENT)
            node = node.entries[part]
        return node

    def _node(self, path, fh):
        if fh and fh in self.handles:
            return self.handles[fh]
        return self._lookup(path)

    def _handle(self, node):
        fh = self.next_handle
        self.next_handle += 1
        self.handles[fh] = node
        return fh

    # --- the power cut -------------------------------------------------------------------------
    def _power_cut(self):
        staging = self.backing.rstrip("/") + ".cut"
        if os.path.exists(staging):
            raise fuse.FuseOSError(errno.EEXIST)
        dump(self.root, staging)
        for name in os.listdir(self.backing):
            victim = os.path.join(self.backing, name)
            if os.path.isdir(victim) and not os.path.islink(victim):
                remove_tree(victim)
            else:
                os.unlink(victim)
        for name in os.listdir(staging):
            os.rename(os.path.join(staging, name), os.path.join(self.backing, name))
        os.rmdir(staging)
        self.cut = True

    # --- operations ----------------------------------------------------------------------------
    def getattr(self, path, fh=None):
        self._check()
        if path == CONTROL:
            return dict(st_mode=stat.S_IFREG | 0o200, st_nlink=1, st_size=0)
        node = self._node(path, fh)
        kind = stat.S_IFDIR if node.kind == "dir" else stat.S_IFREG
        size = len(node.data) if node.kind == "file" else 0
        return dict(
            st_mode=kind | node.mode,
            st_nlink=2 if node.kind == "dir" else 1,
            st_size=size,
            st_blocks=(size + 511) // 512,
            st_mtime=node.mtime,
            st_ctime=node.mtime,
            st_atime=node.mtime,
            st_uid=os.getuid(),
            st_gid=os.getgid(),
        )

    def readdir(self, path, fh):
        self._check()
        node = self._node(path, fh)
        return [".", ".."] + list(node.entries)

    def opendir(self, path):
        self._check()
        node = self._lookup(path)
        if node.kind != "dir":
            raise fuse.FuseOSError(errno.ENOTDIR)
        return self._handle(node)

    def releasedir(self, path, fh):
        self.handles.pop(fh, None)
        return 0

    def fsyncdir(self, path, datasync, fh):
        self._check()
        self._node(path, fh).sync()
        return 0

    def mkdir(self, path, mode):
        self._check()
        parent, name = self._split(path)
        if name in parent.entries:
            raise fuse.FuseOSError(errno.EEXIST)
        parent.entries[name] = Inode("dir", stat.S_IMODE(mode))
        parent.mtime = time.time_ns()
        return 0

    def rmdir(self, path):
        self._check()
        parent, name = self._split(path)
        node = parent.entries.get(name)
        if node is None:
            raise fuse.FuseOSError(errno.ENOENT)
        if node.entries:
            raise fuse.FuseOSError(errno.ENOTEMPTY)
        del parent.entries[name]
        return 0

    def create(self, path, mode, fi=None):
        self._check()
        if path == CONTROL:
            return 0
        parent, name = self._split(path)
        node = parent.entries.get(name)
        if node is None:
            node = Inode("file", stat.S_IMODE(mode))
            parent.entries[name] = node
            parent.mtime = time.time_ns()
        return self._handle(node)

    def open(self, path, flags):
        self._check()
        if path == CONTROL:
            return 0
        node = self._lookup(path)
        if flags & os.O_TRUNC:
            node.data = bytearray()
        return self._handle(node)

    def release(self, path, fh):
        self.handles.pop(fh, None)
        return 0

    def flush(self, path, fh):
        return 0

    def read(self, path, size, offset, fh):
        self._check()
        node = self._node(path, fh)
        return bytes(node.data[offset : offset + size])

    def write(self, path, data, offset, fh):
        if path == CONTROL:
            with self.mutex:
                self._power_cut()
            return len(data)
        self._check()
        node = self._node(path, fh)
        end = offset + len(data)
        if end > len(node.data):
            node.data.extend(b"\0" * (end - len(node.data)))
        node.data[offset:end] = data
        node.mtime = time.time_ns()
        return len(data)

    def truncate(self, path, length, fh=None):
        self._check()
        if path == CONTROL:
            return 0
        node = self._node(path, fh)
        if length < len(node.data):
            del node.data[length:]
        else:
            node.data.extend(b"\0" * (length - len(node.data)))
        node.mtime = time.time_ns()
        return 0

    def fallocate(self, path, mode, offset, length, fh):
        self._check()
        if mode != 0:
            raise fuse.FuseOSError(errno.EOPNOTSUPP)
        node = self._node(path, fh)
        end = offset + length
        if end > len(node.data):
            node.data.extend(b"\0" * (end - len(node.data)))
        return 0

    def fsync(self, path, datasync, fh):
        self._check()
        self._node(path, fh).sync()
        return 0

    def unlink(self, path):
        self._check()
        parent, name = self._split(path)
        if name not in parent.entries:
            raise fuse.FuseOSError(errno.ENOENT)
        del parent.entries[name]
        parent.mtime = time.time_ns()
        return 0

    def rename(self, old, new, flags=0):
        self._check()
        old_parent, old_name = self._split(old)
        new_parent, new_name = self._split(new)
        node = old_parent.entries.get(old_name)
        if node is None:
            raise fuse.FuseOSError(errno.ENOENT)
        target = new_parent.entries.get(new_name)
        if flags & 1 and target is not None:  # RENAME_NOREPLACE
            raise fuse.FuseOSError(errno.EEXIST)
        if target is not None and target.kind == "dir" and target.entries:
            raise fuse.FuseOSError(errno.ENOTEMPTY)
        del old_parent.entries[old_name]
        new_parent.entries[new_name] = node
        now = time.time_ns()
        old_parent.mtime = new_parent.mtime = now
        return 0

    def chmod(self, path, mode):
        self._check()
        self._lookup(path).mode = stat.S_IMODE(mode)
        return 0

    def chown(self, path, uid, gid):
        return 0

    def utimens(self, path, times=None):
        self._check()
        node = self._lookup(path)
        node.mtime = times[1] if times else time.time_ns()
        return 0

    def statfs(self, path):
        return dict(
            f_bsize=4096,
            f_frsize=4096,
            f_blocks=1 << 22,
            f_bfree=1 << 21,
            f_bavail=1 << 21,
            f_files=1 << 20,
            f_ffree=1 << 19,
            f_namemax=255,
        )

    def setxattr(self, path, name, value, options, position=0):
        self._check()
        self._lookup(path).xattrs[name] = bytes(value)
        return 0

    def getxattr(self, path, name, position=0):
        self._check()
        node = self._lookup(path)
        if name not in node.xattrs:
            raise fuse.FuseOSError(errno.ENODATA)
        return node.xattrs[name]

    def listxattr(self, path):
        self._check()
        return list(self._lookup(path).xattrs)

    def removexattr(self, path, name):
        self._check()
        self._lookup(path).xattrs.pop(name, None)
        return 0


def remove_tree(path):
    for name in os.listdir(path):
        victim = os.path.join(path, name)
        if os.path.isdir(victim) and not os.path.islink(victim):
            remove_tree(victim)
        else:
            os.unlink(victim)
    os.rmdir(path)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: crashfs.py BACKING MOUNTPOINT")
    backing, mountpoint = sys.argv[1], sys.argv[2]
    fuse.FUSE(
        CrashFs(os.path.abspath(backing)),
        mountpoint,
        foreground=True,
        nothreads=True,
        default_permissions=True,
    )


if __name__ == "__main__":
    main()
