//! Small file-system helpers for the data directory.

use std::io::Write;
use std::path::Path;

/// Writes a new file readable only by its owner (mode 0600), fsyncs it and its directory.
/// Fails if the file already exists, so a concurrent first start cannot overwrite a key.
pub fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
