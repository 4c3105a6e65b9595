//! Download of the official archives: `protoclr data fetch cifar10|cifar100 --dir D`.
//!
//! The archive is streamed into a temporary file inside `D` (MD5 computed on the way, indicatif
//! progress bar with bytes and ETA), checked against the expected MD5, unpacked with `tar` +
//! `flate2` into a temporary folder inside `D`, verified, and only then its top folder
//! (`cifar-10-batches-bin/` or `cifar-100-binary/`) is renamed into `D`. On any error the
//! temporary file and folder are removed: `D` holds either the complete, checked folder or
//! nothing new. Archive entries must be plain files or folders under the expected top folder
//! (no `..`, no absolute paths, no links), so a hostile archive cannot write elsewhere.

use super::cifar::{check_folder, problems, problems_error, Layout, LAYOUTS};
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use md5::{Digest, Md5};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Host part of the official download URLs.
pub const OFFICIAL_BASE_URL: &str = "https://www.cs.toronto.edu/~kriz";
/// The official CIFAR-10 binary archive.
pub const CIFAR10_URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";
/// Published MD5 of [`CIFAR10_URL`].
pub const CIFAR10_ARCHIVE_MD5: &str = "c32a1d4ab5d03f1284b67883e8d87530";
/// The official CIFAR-100 binary archive.
pub const CIFAR100_URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz";
/// Published MD5 of [`CIFAR100_URL`].
pub const CIFAR100_ARCHIVE_MD5: &str = "03b5dce01913d631647c71ecec9e9cb8";
/// Environment variable naming a mirror: `$PROTOCLR_DATA_URL/cifar-10-binary.tar.gz` is
/// downloaded instead of the official URL (same file name, same expected MD5).
pub const DATA_URL_ENV: &str = "PROTOCLR_DATA_URL";

fn archive_url_with(dataset: &str, base_url: Option<&str>, env: Option<String>) -> Result<String> {
    let layout = super::cifar::layout(dataset)?;
    let base = match (base_url, env) {
        (Some(b), _) => b.to_string(),
        (None, Some(e)) if !e.trim().is_empty() => e.trim().to_string(),
        _ => OFFICIAL_BASE_URL.to_string(),
    };
    Ok(format!("{}/{}", base.trim_end_matches('/'), layout.archive))
}

/// The URL `fetch` downloads for `dataset`: `<base>/cifar-10-binary.tar.gz` (or
/// `cifar-100-binary.tar.gz`) where base is `base_url`, else env `PROTOCLR_DATA_URL`, else
/// [`OFFICIAL_BASE_URL`].
pub fn archive_url(dataset: &str, base_url: Option<&str>) -> Result<String> {
    archive_url_with(dataset, base_url, std::env::var(DATA_URL_ENV).ok())
}

/// Downloads, checks (published archive MD5), unpacks and verifies `dataset` (`cifar10` or
/// `cifar100`) into `dir`; returns the dataset folder (`dir/cifar-10-batches-bin` …), which is
/// then a data root's subfolder for `load`. See [`archive_url`] for `base_url`.
pub fn fetch(
    dataset: &str,
    dir: &Path,
    base_url: Option<&str>,
    progress: bool,
    idle_timeout: Duration,
) -> Result<PathBuf> {
    fetch_from_with(
        &archive_url(dataset, base_url)?,
        None,
        dir,
        progress,
        idle_timeout,
    )
}

/// How long a download may go without receiving a byte before it fails ([`fetch_from_with`];
/// `protoclr data fetch --timeout`).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// [`fetch_from_with`] with [`DEFAULT_IDLE_TIMEOUT`].
pub fn fetch_from(url: &str, expected_md5: Option<&str>, dir: &Path, progress: bool) -> Result<PathBuf> {
    fetch_from_with(url, expected_md5, dir, progress, DEFAULT_IDLE_TIMEOUT)
}

/// Downloads the archive at `url` into `dir` (created if needed) and returns the unpacked
/// dataset folder. The dataset is recognised by the URL's file name (`cifar-10-binary.tar.gz`
/// or `cifar-100-binary.tar.gz`).
///
/// `expected_md5` is the archive's MD5; `None` means the published one. When the expected MD5
/// is the published one, the unpacked files must also be the official ones (their published
/// MD5s). With any other expected MD5 (a test archive, a
/// private re-pack) those file checks cannot apply, so only the structure is required (every
/// file present, whole records, labels in range); loading such files then needs
/// `allow_unverified`.
///
/// If the dataset folder already exists in `dir` and passes the same checks, nothing is
/// downloaded; if it exists but fails them, that is an error (remove it and fetch again).
///
/// A connection that delivers no byte for `idle_timeout` (headers or body) fails the download;
/// the partial archive is removed on every error, and the temporary files that a killed fetch
/// left in `dir` (`.<archive>.part-<pid>-…`, `.<folder>.unpack-<pid>-…` of a process that no
/// longer runs) are removed when the next fetch starts.
pub fn fetch_from_with(
    url: &str,
    expected_md5: Option<&str>,
    dir: &Path,
    progress: bool,
    idle_timeout: Duration,
) -> Result<PathBuf> {
    let name = url
        .split(['?', '#'])
        .next()
        .and_then(|u| u.rsplit('/').next())
        .unwrap_or_default();
    let layout = LAYOUTS
        .iter()
        .copied()
        .find(|l| l.archive == name)
        .with_context(|| {
            format!(
                "{url}: unknown archive `{name}`; expected {} or {}",
                LAYOUTS[0].archive, LAYOUTS[1].archive
            )
        })?;
    let expected = expected_md5.unwrap_or(layout.archive_md5).to_ascii_lowercase();
    let official = expected == layout.archive_md5;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    remove_stale_temporaries(dir, layout);
    let target = dir.join(layout.folder);
    if target.exists() {
        check_unpacked(layout, &target, official).with_context(|| {
            format!(
                "{} already exists but fails verification; remove it and fetch again",
                target.display()
            )
        })?;
        if progress {
            eprintln!("{} is already present and checked", target.display());
        }
        return Ok(target);
    }

    let stamp = unique_stamp();
    let archive = TempPath(dir.join(format!(".{}.part-{stamp}", layout.archive)));
    let got = download(url, &archive.0, progress, idle_timeout)?;
    if got != expected {
        bail!("download of {url} is corrupt: MD5 expected {expected}, got {got}");
    }
    let staging = TempPath(dir.join(format!(".{}.unpack-{stamp}", layout.folder)));
    std::fs::create_dir(&staging.0).with_context(|| format!("cannot create {}", staging.0.display()))?;
    if progress {
        eprintln!("unpacking {} …", layout.archive);
    }
    unpack(&archive.0, layout.folder, &staging.0)
        .with_context(|| format!("cannot unpack the archive from {url}"))?;
    drop(archive);
    let staged = staging.0.join(layout.folder);
    if !staged.is_dir() {
        bail!("the archive from {url} holds no {}/ folder", layout.folder);
    }
    check_unpacked(layout, &staged, official)
        .with_context(|| format!("the archive from {url} does not hold valid files"))?;
    std::fs::rename(&staged, &target)
        .with_context(|| format!("cannot move {} to {}", staged.display(), target.display()))?;
    drop(staging);
    if progress {
        eprintln!("{} is ready", target.display());
    }
    Ok(target)
}

/// Verifies an unpacked folder: official files when `official`, else structure only.
fn check_unpacked(layout: &Layout, dir: &Path, official: bool) -> Result<()> {
    let checks = check_folder(layout, dir);
    let problems = problems(&checks, !official);
    if !problems.is_empty() {
        return Err(problems_error(layout, dir, &checks, &problems));
    }
    Ok(())
}

/// A temporary file or folder, removed when dropped.
struct TempPath(PathBuf);

impl Drop for TempPath {
    fn drop(&mut self) {
        if self.0.is_dir() {
            let _ = std::fs::remove_dir_all(&self.0);
        } else {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// A suffix unique to this process and moment, for temporary names.
fn unique_stamp() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{}-{nanos}", std::process::id())
}

/// Removes the temporary archive files and unpack folders of `layout` in `dir` that belong to a
/// process that is not running any more (a fetch killed mid-way); see [`unique_stamp`].
fn remove_stale_temporaries(dir: &Path, layout: &Layout) {
    let prefixes = [
        format!(".{}.part-", layout.archive),
        format!(".{}.unpack-", layout.folder),
    ];
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(stamp) = prefixes.iter().find_map(|p| name.strip_prefix(p.as_str())) else {
            continue;
        };
        let Some(pid) = stamp
            .split('-')
            .next()
            .and_then(|p| p.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        if pid > 0 && !process_alive(pid) {
            drop(TempPath(entry.path()));
        }
    }
}

/// Whether a process with this id exists (signal 0 probes without sending anything).
fn process_alive(pid: libc::pid_t) -> bool {
    // SAFETY: kill with signal 0 only checks for the process; it has no other effect.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Is the URL's host the local machine (then no proxy is used)?
fn is_loopback(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if host.starts_with('[') {
        host.split(']').next().map_or(host, |h| &h[1..])
    } else {
        host.split(':').next().unwrap_or(host)
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Streams `url` into `dest`, returning the MD5 (hex) of the bytes.
fn download(url: &str, dest: &Path, progress: bool, idle_timeout: Duration) -> Result<String> {
    if idle_timeout.is_zero() {
        bail!("the download timeout must be > 0 s");
    }
    let mut config = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        // Every read from the connection, headers and body: a stalled server fails the download.
        .timeout_per_read(Some(idle_timeout));
    if is_loopback(url) {
        config = config.proxy(None);
    }
    let agent: ureq::Agent = config.build().into();
    let response = agent
        .get(url)
        // The archive's own bytes: no transparent decompression by the transport.
        .header("Accept-Encoding", "identity")
        .call()
        .with_context(|| format!("cannot download {url}"))?;
    let len = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let bar = if !progress {
        ProgressBar::hidden()
    } else if let Some(len) = len {
        ProgressBar::new(len).with_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}")
                .expect("valid template")
                .progress_chars("=> "),
        )
    } else {
        ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{msg} {spinner} {bytes} {bytes_per_sec}").expect("valid template"),
        )
    };
    bar.set_message(format!("downloading {url}"));
    let mut reader = response.into_body().into_reader();
    let file = File::create(dest).with_context(|| format!("cannot create {}", dest.display()))?;
    let mut out = BufWriter::new(file);
    let mut md5 = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf).with_context(|| {
            format!(
                "download of {url} failed after {total} bytes (no data for {} s fails it; see --timeout)",
                idle_timeout.as_secs_f64()
            )
        })?;
        if n == 0 {
            break;
        }
        md5.update(&buf[..n]);
        out.write_all(&buf[..n])
            .with_context(|| format!("cannot write {}", dest.display()))?;
        total += n as u64;
        bar.inc(n as u64);
    }
    out.into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot write {}", dest.display()))?;
    bar.finish_and_clear();
    if let Some(len) = len {
        if total != len {
            bail!("download of {url} ended after {total} of {len} bytes");
        }
    }
    Ok(hex::encode(md5.finalize()))
}

/// The path of an archive entry relative to the unpack folder, if it lies under `top/`:
/// only plain components (a leading `./` is ignored), the first one `top`.
fn entry_path(raw: &Path, top: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for comp in raw.components() {
        match comp {
            Component::CurDir => {}
            Component::Normal(c) => out.push(c),
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    match out.components().next() {
        Some(Component::Normal(first)) if first == top => Some(out),
        _ => None,
    }
}

/// Unpacks the `.tar.gz` at `archive` into `into`, accepting only files and folders under `top/`.
fn unpack(archive: &Path, top: &str, into: &Path) -> Result<()> {
    let file = File::open(archive).with_context(|| format!("cannot open {}", archive.display()))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(BufReader::new(file)));
    for entry in tar.entries().context("not a tar.gz archive")? {
        let mut entry = entry.context("corrupt tar.gz archive")?;
        let raw = entry
            .path()
            .context("archive entry with an invalid path")?
            .into_owned();
        let kind = entry.header().entry_type();
        if kind == tar::EntryType::XGlobalHeader {
            continue;
        }
        let rel = entry_path(&raw, top).with_context(|| {
            format!(
                "archive entry `{}` is outside `{top}/` (path traversal or unexpected layout)",
                raw.display()
            )
        })?;
        let dest = into.join(&rel);
        match kind {
            tar::EntryType::Directory => {
                std::fs::create_dir_all(&dest).with_context(|| format!("cannot create {}", dest.display()))?
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if let Some(parent) = dest.parent() {
                    std::fs::create_dir_all(parent)
                        .with_context(|| format!("cannot create {}", parent.display()))?;
                }
                let mut out =
                    File::create(&dest).with_context(|| format!("cannot create {}", dest.display()))?;
                std::io::copy(&mut entry, &mut out)
                    .with_context(|| format!("cannot unpack `{}`", raw.display()))?;
            }
            other => bail!(
                "archive entry `{}` is a {other:?}; only plain files and folders are accepted",
                raw.display()
            ),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::{load_cifar10, CIFAR10_FOLDER};
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::net::TcpListener;

    /// A `.tar.gz` of `entries` (path, bytes). Paths are written into the header verbatim, so
    /// hostile names (`..`) can be built too.
    fn tar_gz(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut builder = tar::Builder::new(gz);
        let mut dir = tar::Header::new_ustar();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_path(format!("{CIFAR10_FOLDER}/")).unwrap();
        dir.set_mode(0o755);
        dir.set_size(0);
        dir.set_cksum();
        builder.append(&dir, std::io::empty()).unwrap();
        for (path, bytes) in entries {
            let mut h = tar::Header::new_ustar();
            let name = &mut h.as_ustar_mut().unwrap().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_size(bytes.len() as u64);
            h.set_cksum();
            builder.append(&h, bytes.as_slice()).unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap()
    }

    /// The fake release as archive entries under `cifar-10-batches-bin/`.
    fn fake_entries(records: usize) -> Vec<(String, Vec<u8>)> {
        cifar10_tree(records)
            .into_iter()
            .map(|(n, b)| (format!("{CIFAR10_FOLDER}/{n}"), b))
            .collect()
    }

    /// Serves `body` at any path ending in `/<name>` (404 elsewhere) on 127.0.0.1; returns the
    /// base URL. The server thread lives until the test process ends.
    fn serve(name: &'static str, body: Vec<u8>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}/mirror", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let path = request_line.split_whitespace().nth(1).unwrap_or("");
                let (status, payload): (&str, &[u8]) = if path.ends_with(&format!("/{name}")) {
                    ("200 OK", &body)
                } else {
                    ("404 Not Found", b"not found")
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/gzip\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n",
                    payload.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(payload);
            }
        });
        base
    }

    fn md5_hex(bytes: &[u8]) -> String {
        hex::encode(Md5::digest(bytes))
    }

    fn entries_of(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn urls_compose_from_base_env_or_official() {
        assert_eq!(archive_url_with("cifar10", None, None).unwrap(), CIFAR10_URL);
        assert_eq!(archive_url_with("cifar100", None, None).unwrap(), CIFAR100_URL);
        assert_eq!(
            archive_url_with("cifar10", Some("http://m/x/"), Some("http://env".into())).unwrap(),
            "http://m/x/cifar-10-binary.tar.gz"
        );
        assert_eq!(
            archive_url_with("cifar100", None, Some("http://env".into())).unwrap(),
            "http://env/cifar-100-binary.tar.gz"
        );
        assert!(archive_url_with("mnist", None, None).is_err());
        assert!(is_loopback("http://127.0.0.1:8080/a") && is_loopback("http://[::1]:1/"));
        assert!(is_loopback("http://localhost/a") && !is_loopback(CIFAR10_URL));
    }

    #[test]
    fn fetch_from_local_server_checks_md5_and_unpacks() {
        let archive = tar_gz(&fake_entries(6));
        let base = serve("cifar-10-binary.tar.gz", archive.clone());
        let url = format!("{base}/cifar-10-binary.tar.gz");
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");

        // The published archive MD5 (what `fetch` expects): an error naming URL, expected and
        // got, and nothing left behind.
        let err = format!(
            "{:#}",
            fetch("cifar10", &dir, Some(&base), false, DEFAULT_IDLE_TIMEOUT).unwrap_err()
        );
        assert!(err.contains(&url), "{err}");
        assert!(err.contains(&format!("expected {CIFAR10_ARCHIVE_MD5}")), "{err}");
        assert!(err.contains(&format!("got {}", md5_hex(&archive))), "{err}");
        assert!(entries_of(&dir).is_empty(), "{:?}", entries_of(&dir));
        // Any other wrong MD5: the same.
        assert!(fetch_from(&url, Some(&"0".repeat(32)), &dir, false).is_err());
        assert!(entries_of(&dir).is_empty());

        // The archive's real MD5: unpacked, structure-checked, and readable (unverified, since
        // these are not the published files).
        let got = fetch_from(&url, Some(&md5_hex(&archive)), &dir, true).unwrap();
        assert_eq!(got, dir.join(CIFAR10_FOLDER));
        assert_eq!(entries_of(&dir), vec![CIFAR10_FOLDER.to_string()]);
        for (name, bytes) in cifar10_tree(6) {
            assert_eq!(std::fs::read(got.join(&name)).unwrap(), bytes, "{name}");
        }
        let split = load_cifar10(&got, true).unwrap();
        assert_eq!((split.train.n, split.test.n, split.verified), (30, 6, false));
        // Fetching again finds the folder present and checked: no error, nothing changes.
        assert_eq!(
            fetch_from(&url, Some(&md5_hex(&archive)), &dir, false).unwrap(),
            got
        );
        // ... but as the official archive the present files are not acceptable.
        let err = format!("{:#}", fetch_from(&url, None, &dir, false).unwrap_err());
        assert!(
            err.contains("already exists") && err.contains("data_batch_1.bin"),
            "{err}"
        );

        // A missing file on the server: an error naming the URL.
        let err = format!(
            "{:#}",
            fetch_from(&format!("{base}/x/cifar-100-binary.tar.gz"), None, &dir, false).unwrap_err()
        );
        assert!(
            err.contains("cifar-100-binary.tar.gz") && err.contains("404"),
            "{err}"
        );
        assert!(fetch_from(&format!("{base}/other.tar.gz"), None, &dir, false).is_err());
    }

    /// Sends headers announcing `len` bytes and the first 100, then holds the connection open
    /// without sending more for `stall` (a hung mirror); returns the base URL.
    fn serve_stalling(len: usize, stall: Duration) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}/mirror", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut line = String::new();
                    while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                        line.clear();
                    }
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/gzip\r\nContent-Length: {len}\r\n\r\n"
                    );
                    let _ = stream.write_all(head.as_bytes());
                    let _ = stream.write_all(&[7u8; 100]);
                    let _ = stream.flush();
                    std::thread::sleep(stall);
                });
            }
        });
        base
    }

    #[test]
    fn a_stalled_download_times_out_and_leaves_nothing_behind() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        std::fs::create_dir_all(&dir).unwrap();
        // Leftovers of a killed fetch (a process id that cannot be running) are removed by the
        // next fetch; those of a running process (this one) are not.
        let dead = 0x7FFF_FFF0u32;
        let stale = dir.join(format!(".cifar-10-binary.tar.gz.part-{dead}-1"));
        let stale_dir = dir.join(format!(".cifar-10-batches-bin.unpack-{dead}-1"));
        let live = dir.join(format!(".cifar-10-binary.tar.gz.part-{}-1", std::process::id()));
        std::fs::write(&stale, b"half an archive").unwrap();
        std::fs::create_dir_all(stale_dir.join("cifar-10-batches-bin")).unwrap();
        std::fs::write(&live, b"being written").unwrap();
        let base = serve_stalling(1_000_000, Duration::from_secs(30));
        let url = format!("{base}/cifar-10-binary.tar.gz");
        let err =
            fetch_from_with(&url, Some(&"0".repeat(32)), &dir, false, Duration::from_secs(1)).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("after 100 bytes") && msg.contains("no data for 1 s"),
            "{msg}"
        );
        let left = entries_of(&dir);
        let live_name = live.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(left, vec![live_name], "{left:?}");
    }

    #[test]
    fn hostile_or_broken_archives_leave_nothing_behind() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let escape = format!("{CIFAR10_FOLDER}/../../evil.txt");
        type Entries = Vec<(String, Vec<u8>)>;
        let cases: Vec<(Entries, &str)> = vec![
            // Path traversal out of the top folder (and out of `dir`).
            (
                [fake_entries(2), vec![(escape.clone(), b"owned".to_vec())]].concat(),
                "path traversal",
            ),
            // An absolute path.
            (vec![("/tmp/protoclr-evil.txt".into(), b"x".to_vec())], "outside"),
            // An entry outside the expected top folder.
            (vec![("other/file.bin".into(), b"x".to_vec())], "outside"),
            // A structurally broken release (a batch truncated inside a record).
            (
                {
                    let mut e = fake_entries(2);
                    e[2].1.truncate(3000);
                    e
                },
                "data_batch_3.bin",
            ),
            // A release missing its test batch.
            (fake_entries(2)[..5].to_vec(), "test_batch.bin: missing"),
        ];
        for (entries, needle) in cases {
            let archive = tar_gz(&entries);
            let base = serve("cifar-10-binary.tar.gz", archive.clone());
            let url = format!("{base}/cifar-10-binary.tar.gz");
            let err = fetch_from(&url, Some(&md5_hex(&archive)), &dir, false).unwrap_err();
            let msg = format!("{err:#}");
            assert!(msg.contains(needle), "{needle} not in {msg}");
            assert!(entries_of(&dir).is_empty(), "{needle}: {:?}", entries_of(&dir));
            assert!(!tmp.path().join("evil.txt").exists());
            assert!(!dir.join("evil.txt").exists());
            assert!(!Path::new("/tmp/protoclr-evil.txt").exists());
        }
        // The guard itself.
        assert_eq!(
            entry_path(Path::new("./cifar-10-batches-bin/a.bin"), CIFAR10_FOLDER),
            Some(PathBuf::from("cifar-10-batches-bin/a.bin"))
        );
        assert_eq!(
            entry_path(Path::new("cifar-10-batches-bin/../x"), CIFAR10_FOLDER),
            None
        );
        assert_eq!(
            entry_path(Path::new("/cifar-10-batches-bin/x"), CIFAR10_FOLDER),
            None
        );
    }
}
