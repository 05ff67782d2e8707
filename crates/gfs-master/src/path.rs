//! Validated absolute paths of the namespace.

use crate::error::{MasterError, Result};

/// Longest path accepted, in bytes.
pub const MAX_PATH: usize = 4096;
/// Longest path component accepted, in bytes.
pub const MAX_NAME: usize = 255;

/// Checks that `path` is absolute and clean, and returns it normalized (no trailing `/`).
///
/// Refused: relative paths, empty components (`//`), `.` and `..`, NUL bytes, components over
/// [`MAX_NAME`] bytes, paths over [`MAX_PATH`] bytes.
pub fn normalize(path: &str) -> Result<String> {
    let bad = |reason| {
        Err(MasterError::InvalidPath {
            path: path.chars().take(200).collect(),
            reason,
        })
    };
    if path.len() > MAX_PATH {
        return bad("longer than 4096 bytes");
    }
    if !path.starts_with('/') {
        return bad("not absolute (must start with /)");
    }
    if path.contains('\0') {
        return bad("contains a NUL byte");
    }
    if path == "/" {
        return Ok("/".into());
    }
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    for c in trimmed[1..].split('/') {
        match c {
            "" => return bad("has an empty component"),
            "." | ".." => return bad("has a . or .. component"),
            c if c.len() > MAX_NAME => return bad("has a component longer than 255 bytes"),
            _ => {}
        }
    }
    Ok(trimmed.to_string())
}

/// The parent of a normalized path (`/` for top-level entries and for `/` itself).
pub fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// The last component of a normalized path (empty for `/`).
pub fn name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or("")
}

/// Every ancestor of a normalized path, from `/` down to its parent.
pub fn ancestors(path: &str) -> Vec<&str> {
    let mut out = vec!["/"];
    for (i, _) in path.match_indices('/').skip(1) {
        out.push(&path[..i]);
    }
    if path == "/" {
        out.clear();
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn good_paths_normalize() {
        assert_eq!(normalize("/").unwrap(), "/");
        assert_eq!(normalize("/a").unwrap(), "/a");
        assert_eq!(normalize("/a/b c/d.txt/").unwrap(), "/a/b c/d.txt");
        assert_eq!(
            normalize(&format!("/{}", "x".repeat(255))).unwrap().len(),
            256
        );
    }

    #[test]
    fn bad_paths_are_refused_with_a_reason() {
        for (p, why) in [
            ("", "absolute"),
            ("a/b", "absolute"),
            ("/a//b", "empty"),
            ("/a/./b", ". or .."),
            ("/a/..", ". or .."),
            ("/a\0b", "NUL"),
        ] {
            let e = normalize(p).unwrap_err().to_string();
            assert!(e.contains(why), "{p:?}: {e}");
        }
        assert!(normalize(&format!("/{}", "x".repeat(256))).is_err());
        assert!(normalize(&"/abc".repeat(1100)).is_err());
    }

    #[test]
    fn parents_names_and_ancestors() {
        assert_eq!(parent("/a/b/c"), "/a/b");
        assert_eq!(parent("/a"), "/");
        assert_eq!(name("/a/b/c"), "c");
        assert_eq!(ancestors("/a/b/c"), vec!["/", "/a", "/a/b"]);
        assert_eq!(ancestors("/a"), vec!["/"]);
        assert!(ancestors("/").is_empty());
    }
}
