//! A disk that fills: a small tmpfs mounted on a fresh directory, for the spool's
//! disk-full cases. Mounting needs root, as the tests have in CI.

use std::path::Path;
use std::process::Command;

/// A tmpfs of a given size, unmounted (and its directory removed) on drop.
pub struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` (as mount(8) spells it: `256k`, `1m`); panics with the
    /// reason if it cannot, so that the test fails rather than passes untried.
    pub fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().expect("a directory to mount on");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount(8)");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (as in CI); this test fills a real disk"
        );
        SmallDisk { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}
