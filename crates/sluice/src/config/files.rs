//! One writer per local file: the config refuses two uses of one file
//! across every pipeline's sources (an input that is also a failures file,
//! two pipelines reading one input through one default checkpoint), as
//! the paths resolve — through symlinks, `..` and hard links — not as they
//! are spelled. Sharing a checkpoint loses lines for good; a failures file
//! that is the input feeds each dead letter back in as a new job.

use std::path::{Path, PathBuf};

use crate::component::LocalFile;

/// Where a file is, whatever path names it.
#[derive(Debug, PartialEq, Eq)]
enum Identity {
    Stdin,
    /// An existing file: its device and inode (hard links alike).
    Inode(u64, u64),
    /// A file yet to be created: its directory resolved, then its name.
    Path(PathBuf),
}

fn identity(path: &Path) -> Identity {
    use std::os::unix::fs::MetadataExt;
    if path.as_os_str() == "-" {
        return Identity::Stdin;
    }
    if let Ok(m) = std::fs::metadata(path) {
        return Identity::Inode(m.dev(), m.ino());
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().map(PathBuf::from).unwrap_or_default();
    match std::fs::canonicalize(dir) {
        Ok(d) => Identity::Path(d.join(name)),
        // The directory is missing: the source's own check says so.
        Err(_) => Identity::Path(path.to_path_buf()),
    }
}

/// One pipeline's use of a file.
pub(super) struct Use<'a> {
    pub pipeline: usize,
    pub name: &'a str,
    pub file: LocalFile,
}

/// Two uses of one file: what to say, at the later one's field.
pub(super) struct Alias {
    pub pipeline: usize,
    pub field: &'static str,
    pub message: String,
}

/// The first pair of `uses` that name one file where either needs it
/// alone.
pub(super) fn first_alias(uses: &[Use<'_>]) -> Option<Alias> {
    let ids: Vec<Identity> = uses.iter().map(|u| identity(&u.file.path)).collect();
    for (j, later) in uses.iter().enumerate() {
        for (i, earlier) in uses[..j].iter().enumerate() {
            if ids[i] != ids[j] || !(earlier.file.exclusive || later.file.exclusive) {
                continue;
            }
            let other = if earlier.pipeline == later.pipeline {
                format!("this pipeline's `{}`", earlier.file.field)
            } else {
                format!(
                    "pipeline `{}`'s `{}` (pipeline[{}].source)",
                    earlier.name, earlier.file.field, earlier.pipeline
                )
            };
            let shown = later.file.path.display();
            let fix = if ids[j] == Identity::Stdin {
                "only one pipeline can read stdin: give the others a file".to_owned()
            } else if later.file.field == "path" {
                format!(
                    "a pipeline's input may not be a file sluice writes: point `{}` elsewhere",
                    earlier.file.field
                )
            } else {
                let input = uses
                    .iter()
                    .find(|u| u.pipeline == later.pipeline && u.file.field == "path")
                    .map(|u| u.file.path.display().to_string())
                    .unwrap_or_else(|| "input".into());
                format!(
                    "each pipeline needs a {field} of its own, or lines are lost or run \
                     twice: set {field} = \"{input}.{name}.{field}\" (two pipelines reading one \
                     input get one each)",
                    field = later.file.field,
                    name = later.name,
                )
            };
            return Some(Alias {
                pipeline: later.pipeline,
                field: later.file.field,
                message: format!("`{shown}` is the same file as {other}: {fix}"),
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(field: &'static str, path: &Path, exclusive: bool) -> LocalFile {
        LocalFile {
            field,
            path: path.to_path_buf(),
            exclusive,
        }
    }

    #[test]
    fn paths_are_compared_as_they_resolve() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let d = dir.path();
        std::fs::write(d.join("jobs"), "").expect("write");
        std::fs::create_dir(d.join("sub")).expect("mkdir");
        std::os::unix::fs::symlink(d.join("jobs"), d.join("link")).expect("symlink");
        std::fs::hard_link(d.join("jobs"), d.join("hard")).expect("hard link");
        let same = |a: &Path, b: &Path| identity(a) == identity(b);
        assert!(same(&d.join("jobs"), &d.join("link")));
        assert!(same(&d.join("jobs"), &d.join("hard")));
        assert!(same(&d.join("jobs"), &d.join("sub/../jobs")));
        assert!(
            same(&d.join("new"), &d.join("sub/../new")),
            "not yet created"
        );
        assert!(!same(&d.join("jobs"), &d.join("new")));
        assert!(same(Path::new("-"), Path::new("-")));

        let uses = |a: LocalFile, b: LocalFile| {
            [
                Use {
                    pipeline: 0,
                    name: "a",
                    file: a,
                },
                Use {
                    pipeline: 1,
                    name: "b",
                    file: b,
                },
            ]
        };
        // Two readers of one input: fine.
        let read = |p: &str| file("path", &d.join(p), false);
        assert!(first_alias(&uses(read("jobs"), read("link"))).is_none());
        // A reader and a writer: refused, at the later one.
        let a = first_alias(&uses(read("jobs"), file("failures", &d.join("hard"), true)))
            .expect("refused");
        assert_eq!((a.pipeline, a.field), (1, "failures"));
        assert!(a.message.contains("pipeline `a`'s `path`"), "{}", a.message);
        let a = first_alias(&uses(
            file("checkpoint", &d.join("c"), true),
            file("checkpoint", &d.join("sub/../c"), true),
        ))
        .expect("refused");
        assert!(a.message.contains("checkpoint of its own"), "{}", a.message);
    }
}
