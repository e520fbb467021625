//! A small real filesystem for disk-full tests: a tmpfs with a size limit on a fresh
//! temporary directory (mounting one needs root, which CI and the dev machines have).
//! Shared by `storage/tests/disk_full.rs` and the process test
//! `tests/tests/process/disk_full.rs` (included there by path).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted tmpfs; lazily unmounted (so that files a failed test left open do not keep
/// it) and its directory removed on drop. Declare it before whatever uses it, so that
/// those are dropped first.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=`, e.g. `64m`).
    pub fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::Builder::new()
            .prefix("shoal-diskfull-")
            .tempdir()
            .expect("creating the mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("running mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir }
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Bytes available on the filesystem.
    pub fn available(&self) -> u64 {
        let out = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(self.path())
            .output()
            .expect("running df");
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .nth(1)
            .and_then(|line| line.trim().parse().ok())
            .unwrap_or_else(|| panic!("unexpected df output: {text}"))
    }

    /// Writes a file taking all but `leave` bytes of the filesystem; returns its path.
    pub fn ballast(&self, leave: u64) -> PathBuf {
        let path = self.path().join("ballast");
        let size = self.available().saturating_sub(leave);
        let file = std::fs::File::create(&path).expect("creating the ballast");
        let mut writer = std::io::BufWriter::new(file);
        let chunk = vec![0xA5u8; 1 << 20];
        let mut written = 0u64;
        while written < size {
            let n =
                usize::try_from(size - written).map_or(chunk.len(), |left| left.min(chunk.len()));
            std::io::Write::write_all(&mut writer, &chunk[..n]).expect("writing the ballast");
            written += n as u64;
        }
        std::io::Write::flush(&mut writer).expect("writing the ballast");
        path
    }
}

impl Tmpfs {
    /// Writes a file `name` until the filesystem has no byte left (as another program
    /// filling the disk would); returns its path.
    pub fn fill_up(&self, name: &str) -> PathBuf {
        let path = self.path().join(name);
        let mut file = std::fs::File::create(&path).expect("creating the filler");
        let chunk = vec![0xA5u8; 64 * 1024];
        loop {
            match std::io::Write::write(&mut file, &chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(error) if error.kind() == std::io::ErrorKind::StorageFull => break,
                Err(error) => panic!("writing the filler: {error}"),
            }
        }
        // The last partial pages too.
        while let Ok(1) = std::io::Write::write(&mut file, &[0u8]) {}
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.path()).status();
    }
}
