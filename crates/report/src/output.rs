//! Writing report files atomically: each file is written to a temporary sibling and renamed over
//! the target, so a killed report leaves either the old file or the new one, never half of one.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use polars::prelude::*;

/// Writes `bytes` to `path` atomically: the one atomic write of the crates
/// ([`protoclr_formats::fsutil::atomic_write`]: temporary sibling named as
/// [`protoclr_formats::temps`] says, fsync, rename, fsync of the folder).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    protoclr_formats::fsutil::atomic_write(path, bytes)
}

/// A DataFrame as CSV text (header included).
pub fn csv_text(mut df: DataFrame) -> Result<String> {
    let mut buf = Vec::new();
    CsvWriter::new(&mut buf)
        .include_header(true)
        .finish(&mut df)
        .map_err(anyhow::Error::from)?;
    Ok(String::from_utf8(buf)?)
}

/// Writes `<stem>.md`, `<stem>.tex` and `<stem>.csv` into `out`, each atomically.
pub fn write_table(out: &Path, stem: &str, md: &str, tex: &str, df: DataFrame) -> Result<Vec<PathBuf>> {
    let paths: Vec<PathBuf> = ["md", "tex", "csv"]
        .iter()
        .map(|e| out.join(format!("{stem}.{e}")))
        .collect();
    let csv = csv_text(df).with_context(|| format!("writing {}", paths[2].display()))?;
    for (p, text) in paths.iter().zip([md, tex, csv.as_str()]) {
        write_atomic(p, text.as_bytes())?;
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub").join("a.md");
        write_atomic(&p, b"old").unwrap();
        write_atomic(&p, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new");
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1, "only the target remains");
    }
}
