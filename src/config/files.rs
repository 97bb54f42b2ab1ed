//! Files that variables name (secrets, PEM material), read with a bound: a path such as
//! `/dev/zero`, or a wrong file, must be a problem, not a process that fills its memory
//! until the kernel kills it.

use std::io::Read;

/// Reads at most `max_bytes` of `path`; a longer file is an error.
pub(super) fn read_bounded(path: &str, max_bytes: u64) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(max_bytes + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read {path}: {e}"))?;
    if bytes.len() as u64 > max_bytes {
        return Err(format!(
            "{path} is larger than {max_bytes} bytes, more than it should hold"
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_read_up_to_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "12345").unwrap();
        let path = path.to_str().unwrap();
        assert_eq!(read_bounded(path, 5).unwrap(), b"12345");
        let error = read_bounded(path, 4).unwrap_err();
        assert!(error.ends_with("is larger than 4 bytes, more than it should hold"));
        assert!(read_bounded("/dev/zero", 1024).is_err());
        let error = read_bounded("/nonexistent/f", 5).unwrap_err();
        assert!(error.starts_with("cannot read /nonexistent/f: "), "{error}");
    }
}
