//! A path under the system's temporary directory that is removed when the test ends, also when
//! it fails: tests write kubeconfigs and keys there, and a leftover one outlives the environment
//! whose credentials it holds.

use std::{
    ops::Deref,
    path::{Path, PathBuf},
};

/// A unique file or directory name in the temporary directory; nothing is created, and whatever
/// the test put there is removed on drop.
#[derive(Debug)]
pub struct TempPath(PathBuf);

impl TempPath {
    /// A fresh name starting with `prefix`.
    pub fn new(prefix: &str) -> Self {
        Self(std::env::temp_dir().join(crate::unique_name(prefix)))
    }
}

impl Deref for TempPath {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempPath {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if self.0.is_dir() {
            let _ = std::fs::remove_dir_all(&self.0);
        } else {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_test_wrote_is_gone_after_it() {
        let file = TempPath::new("temp-path-file");
        std::fs::write(&*file, b"secret").expect("write");
        let dir = TempPath::new("temp-path-dir");
        std::fs::create_dir_all(dir.join("a/b")).expect("mkdir");
        let (file_path, dir_path) = (file.to_path_buf(), dir.to_path_buf());
        assert!(file_path.exists() && dir_path.exists());
        drop((file, dir));
        assert!(!file_path.exists(), "{}", file_path.display());
        assert!(!dir_path.exists(), "{}", dir_path.display());
    }
}
