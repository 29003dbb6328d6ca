//! Artisan roast logs to replay as load: the files at a path, read by [`roast::alog`].

use std::path::{Path, PathBuf};

pub use roast::alog::{LogSample, RoastLog};

use crate::Error;

/// Reads every `.alog` file at `path` (a file, or a directory: its `.alog` files, by name).
pub fn load(path: &Path) -> Result<Vec<RoastLog>, Error> {
    let io = |source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(io)?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .is_some_and(|x| x.eq_ignore_ascii_case("alog"))
            })
            .collect();
        files.sort();
        files
    } else {
        vec![path.to_owned()]
    };
    if files.is_empty() {
        return Err(Error::Config(format!(
            "{}: no .alog roast logs there",
            path.display()
        )));
    }
    files
        .iter()
        .map(|file| {
            let text = std::fs::read_to_string(file).map_err(|source| Error::Io {
                path: file.display().to_string(),
                source,
            })?;
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            roast::alog::parse(&name, &text)
                .map_err(|e| Error::Config(format!("{}: {e}", file.display())))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_a_file_or_the_logs_of_a_directory() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/roast-logs/skywalker");
        let one = load(&dir.join("roast_25-10-11_1319.alog")).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].name, "roast_25-10-11_1319.alog");
        let all = load(&dir).unwrap();
        assert_eq!(
            all.len(),
            10,
            "the .alog files of the folder, not its README"
        );
        assert!(all.windows(2).all(|w| w[0].name < w[1].name), "by name");
        assert!(all.contains(&one[0]));
        let empty = tempfile::tempdir().unwrap();
        assert!(
            load(empty.path())
                .unwrap_err()
                .to_string()
                .contains("no .alog")
        );
    }
}
