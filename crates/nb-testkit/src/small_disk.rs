//! A small disk for tests of a full disk: a tmpfs of a few bytes, mounted on a temporary folder
//! (root only; CI runs as root), unmounted when dropped.

/// A tmpfs of a set size; `None` from [`SmallDisk::mount`] where it cannot be mounted.
#[derive(Debug)]
pub struct SmallDisk {
    folder: tempfile::TempDir,
}

impl SmallDisk {
    pub fn mount(bytes: usize) -> Option<Self> {
        let folder = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(folder.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        mounted.then_some(Self { folder })
    }

    pub fn path(&self) -> &std::path::Path {
        self.folder.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.folder.path())
            .status();
    }
}
