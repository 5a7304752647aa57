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
    /// Kafka topics, in a consumer group.
    #[cfg(feature = "kafka")]
    Kafka(crate::sources::kafka::KafkaSourceConfig),
}

/// The error of a `[pipeline.source]` (`kind = "source"`) or a
/// `[[pipeline.step]]` (`kind = "step"`) table of type `ty`, read as that
/// type's own config: serde reads a tagged table whole, so its errors point
/// at the table; these point at the value. None when the table reads well
/// (or the type is unknown).
pub(super) fn table_error(
    kind: &str,
    ty: &str,
    table: toml_edit::Table,
) -> Option<toml_edit::de::Error> {
    use crate::steps::{extract, fetch, http, template};
    fn error_as<T: serde::de::DeserializeOwned>(
        table: toml_edit::Table,
    ) -> Option<toml_edit::de::Error> {
        T::deserialize(toml_edit::de::Deserializer::from(
            toml_edit::DocumentMut::from(table),
        ))
        .err()
    }
    match (kind, ty) {
        #[cfg(feature = "file")]
        ("source", "file") => error_as::<crate::sources::file::FileSourceConfig>(table),
        #[cfg(feature = "sqs")]
        ("source", "sqs") => error_as::<crate::sources::sqs::SqsSourceConfig>(table),
        ("step", "extract") => error_as::<extract::ExtractConfig>(table),
        ("step", "fetch") => error_as::<fetch::FetchConfig>(table),
        ("step", "template") => error_as::<template::TemplateConfig>(table),
        ("step", "http") => error_as::<http::HttpConfig>(table),
        _ => None,
    }
}
