//! JPEG completeness: a walk over the marker structure that finds the end-of-image marker.
//!
//! zune-jpeg (in the tolerant mode [`super::folder::decode_jpeg`] uses, as PIL is tolerant) fills
//! the part of an image whose entropy-coded data is missing with grey and returns success, so a
//! file cut anywhere after its headers "decodes". [`check_complete`] is the cheap test that
//! closes that gap: it follows the segments from the start-of-image marker (`FF D8`), skipping
//! each marker segment by its length (so an EXIF thumbnail's own `FF D9` inside `APP1` is not
//! taken for the end) and the entropy-coded data of each scan (where `FF 00` is a stuffed byte
//! and `FF D0`–`FF D7` are restart markers), and requires a frame header (`SOFn`), at least one
//! scan (`SOS`) and the end-of-image marker (`FF D9`) before the bytes run out. Bytes after the
//! end-of-image marker (camera trailers) are allowed, as are stray bytes between segments (which
//! the tolerant decoder skips too). A file cut at any point before its last two bytes fails.

use anyhow::{bail, Result};

/// Markers without a length field: TEM, RST0–RST7, SOI (EOI ends the walk).
fn standalone(marker: u8) -> bool {
    marker == 0x01 || (0xD0..=0xD8).contains(&marker)
}

/// Start-of-frame markers (SOF0–SOF15 except DHT `C4`, JPG `C8` and DAC `CC`).
fn is_frame(marker: u8) -> bool {
    (0xC0..=0xCF).contains(&marker) && !matches!(marker, 0xC4 | 0xC8 | 0xCC)
}

/// Checks that `bytes` hold a complete JPEG stream (see the module doc); the error says what is
/// missing and at which byte offset the data ended.
pub fn check_complete(bytes: &[u8]) -> Result<()> {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        bail!("not a JPEG file (no start-of-image marker)");
    }
    let n = bytes.len();
    let truncated =
        |what: &str| -> Result<()> { bail!("truncated JPEG: {what} ({n} bytes, no end-of-image marker)") };
    let (mut frame, mut scans) = (false, 0usize);
    let mut i = 2;
    loop {
        // The next marker: a 0xFF (any fill 0xFF bytes) and a byte that is neither 0x00 (a
        // stuffed byte of scan data) nor 0xFF.
        let Some(p) = bytes[i..].iter().position(|&b| b == 0xFF) else {
            return truncated(if scans > 0 {
                "the scan data ends early"
            } else {
                "the headers end early"
            });
        };
        i += p;
        while i < n && bytes[i] == 0xFF {
            i += 1;
        }
        if i >= n {
            return truncated("the data ends inside a marker");
        }
        let marker = bytes[i];
        i += 1;
        if marker == 0x00 || standalone(marker) {
            continue;
        }
        if marker == 0xD9 {
            if !frame || scans == 0 {
                bail!("broken JPEG: end-of-image marker before any frame header and scan");
            }
            return Ok(());
        }
        if i + 2 > n {
            return truncated("the data ends inside a segment header");
        }
        let len = usize::from(u16::from_be_bytes([bytes[i], bytes[i + 1]]));
        if len < 2 {
            bail!(
                "broken JPEG: segment FF {marker:02X} at byte {} has length {len}",
                i - 2
            );
        }
        if i + len > n {
            return truncated("the data ends inside a segment");
        }
        frame |= is_frame(marker);
        if marker == 0xDA {
            scans += 1;
        }
        i += len;
    }
}

#[cfg(test)]
mod tests {
    use super::super::folder::test_support::jpeg;
    use super::*;

    #[test]
    fn complete_files_pass_and_every_cut_fails() {
        let full = jpeg(48, 40, 1);
        check_complete(&full).unwrap();
        for cut in 2..full.len() {
            assert!(
                check_complete(&full[..cut]).is_err(),
                "cut at {cut} of {}",
                full.len()
            );
        }
        // Trailing bytes after the end-of-image marker are allowed.
        let mut trailer = full.clone();
        trailer.extend_from_slice(b"camera trailer \xFF\x00\xFF");
        check_complete(&trailer).unwrap();
        assert!(check_complete(b"GIF89a").is_err());
        assert!(check_complete(&[0xFF, 0xD8, 0xFF, 0xD9]).is_err());
    }

    #[test]
    fn an_embedded_end_marker_in_an_app_segment_is_skipped() {
        // An APP1 segment holding a thumbnail-like FF D8 … FF D9 right after SOI, then the cut
        // main image: the inner end marker must not count as the end of the file.
        let full = jpeg(32, 32, 2);
        let payload = [b"Exif\0\0".as_slice(), &[0xFF, 0xD8, 0xFF, 0xD9, 0x12]].concat();
        let len = (payload.len() + 2) as u16;
        let mut with_app = vec![0xFF, 0xD8, 0xFF, 0xE1];
        with_app.extend_from_slice(&len.to_be_bytes());
        with_app.extend_from_slice(&payload);
        with_app.extend_from_slice(&full[2..]);
        check_complete(&with_app).unwrap();
        let cut = with_app.len() / 2;
        assert!(check_complete(&with_app[..cut]).is_err());
    }
}
