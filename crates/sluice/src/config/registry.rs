//! The source types a config can name: one line per source, behind its
//! cargo feature. Each source's folder holds its config and builds itself
//! ([`SourceConfig`]); this list is the only central place that knows it.

use serde::Deserialize;

use crate::sources::SourceConfig;

macro_rules! sources {
    ($( $(#[doc = $doc:literal])* #[cfg($cfg:meta)] $variant:ident($config:ty), )*) => {
        /// `[pipeline.source]`, by `type`.
        #[derive(Debug, Deserialize)]
        #[serde(tag = "type", rename_all = "snake_case")]
        pub enum SourceTable {
            $( $(#[doc = $doc])* #[cfg($cfg)] $variant($config), )*
        }

        impl SourceTable {
            /// The source's own config.
            pub fn config(&self) -> &dyn SourceConfig {
                match self {
                    $( #[cfg($cfg)] SourceTable::$variant(c) => c, )*
                }
            }
        }
    };
}

sources! {
    /// Newline-delimited jobs from a file or stdin.
    #[cfg(feature = "file")]
    File(crate::sources::file::FileSourceConfig),
    /// An Amazon SQS queue.
    #[cfg(feature = "sqs")]
    Sqs(crate::sources::sqs::SqsSourceConfig),
}
