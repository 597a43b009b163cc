//! Talking to the kernel about a `.part` file's disk space. Early writeback: asks the kernel to start writing a just-written range to disk without
//! waiting for it. The final `fdatasync` then has little left to do, so making a file durable
//! overlaps with downloading it instead of following it. Linux only; elsewhere a no-op.

use std::fs::File;

/// Starts writeback of `[offset, offset + length)`; errors are ignored (the final sync is what
/// guarantees durability, this only moves work earlier).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub(crate) fn start_writeback(file: &File, offset: u64, length: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(length)) = (i64::try_from(offset), i64::try_from(length)) else {
        return;
    };
    // SAFETY: sync_file_range only reads its integer arguments; the descriptor is valid for
    // the lifetime of `file`, which outlives the call.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset,
            length,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn start_writeback(_file: &File, _offset: u64, _length: u64) {}

/// Reserves `length` bytes of disk for `file` (`fallocate`, mode 0), so that a full disk is
/// reported before the download rather than in the middle of it. A file system that cannot
/// preallocate is not an error: the file then simply grows as it is written.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub(crate) fn preallocate(file: &File, length: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let Ok(length) = i64::try_from(length) else {
        return Ok(());
    };
    // SAFETY: fallocate only reads its integer arguments; the descriptor is valid for the
    // lifetime of `file`, which outlives the call.
    let result = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, length) };
    if result == 0 {
        return Ok(());
    }
    let error = std::io::Error::last_os_error();
    match error.raw_os_error() {
        Some(libc::EOPNOTSUPP | libc::ENOSYS) => Ok(()),
        _ => Err(error),
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn preallocate(_file: &File, _length: u64) -> std::io::Result<()> {
    Ok(())
}
