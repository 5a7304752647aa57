//! The source conformance suite (tests/conformance/mod.rs) on the file
//! source: a fresh NDJSON file per check, its checkpoint and failures file
//! read back to see what is settled.

mod conformance;

use std::path::PathBuf;

use sluice::SourceContext;
use sluice::sources::Source;
use sluice::sources::file::{FileSource, FileSourceConfig, Resume};

struct FileHarness {
    dir: tempfile::TempDir,
    /// Byte offsets of the lines seeded.
    offsets: Vec<u64>,
}

impl FileHarness {
    fn new() -> FileHarness {
        FileHarness {
            dir: tempfile::tempdir().unwrap(),
            offsets: Vec::new(),
        }
    }

    fn input(&self) -> PathBuf {
        self.dir.path().join("jobs.ndjson")
    }

    fn config(&self) -> FileSourceConfig {
        let mut c = FileSourceConfig::new(self.input().display().to_string());
        c.ordering_key = Some("/key".into());
        c
    }
}

impl conformance::Harness for FileHarness {
    async fn seed(&mut self, msgs: &[(String, Option<String>)]) {
        let mut text = String::new();
        self.offsets.clear();
        for (body, _key) in msgs {
            // The key travels in the body: the source reads it at `/key`.
            self.offsets.push(text.len() as u64);
            text.push_str(body);
            text.push('\n');
        }
        std::fs::write(self.input(), text).unwrap();
    }

    async fn open(&self, concurrency: usize) -> Box<dyn Source> {
        let cx = SourceContext::new("conformance", concurrency);
        Box::new(FileSource::open(&self.config(), &cx).unwrap())
    }

    async fn unsettled(&self) -> usize {
        let mut cp = self.input().into_os_string();
        cp.push(".checkpoint");
        let resume = Resume::load(PathBuf::from(cp).as_path()).unwrap();
        self.offsets
            .iter()
            .filter(|o| !resume.is_settled(**o))
            .count()
    }

    async fn dead_letters(&self) -> Vec<String> {
        let mut f = self.input().into_os_string();
        f.push(".failures");
        match std::fs::read_to_string(PathBuf::from(f)) {
            Ok(t) => t.lines().map(str::to_owned).collect(),
            Err(_) => Vec::new(),
        }
    }
}

all_checks!(FileHarness::new());
