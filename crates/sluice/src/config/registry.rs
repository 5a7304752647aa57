//! The source types a config can name: one line per source, behind its
//! cargo feature. Each source's folder holds its config and builds itself
//! ([`SourceConfig`]); this list is the only central place that knows it
//! (the config's errors read each type's table through it too).

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

        /// The error of a source table of type `ty` read as that type's own
        /// config; None when it reads well or the type is unknown.
        fn source_table_error(
            ty: &str,
            table: toml_edit::Table,
        ) -> Option<toml_edit::de::Error> {
            $(
                #[cfg($cfg)]
                if ty == snake_case(stringify!($variant)) {
                    return error_as::<$config>(table);
                }
            )*
            let _ = (ty, table);
            None
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
    /// Laravel's Redis queue.
    #[cfg(feature = "redis")]
    Redis(crate::sources::redis::RedisSourceConfig),
}

/// `table` read as a `T`: its error, if any.
fn error_as<T: serde::de::DeserializeOwned>(
    table: toml_edit::Table,
) -> Option<toml_edit::de::Error> {
    T::deserialize(toml_edit::de::Deserializer::from(
        toml_edit::DocumentMut::from(table),
    ))
    .err()
}

/// `SqsSource` -> `sqs_source`, as serde's `rename_all = "snake_case"`.
fn snake_case(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
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
    match (kind, ty) {
        ("source", ty) => source_table_error(ty, table),
        ("step", "extract") => error_as::<extract::ExtractConfig>(table),
        ("step", "fetch") => error_as::<fetch::FetchConfig>(table),
        ("step", "template") => error_as::<template::TemplateConfig>(table),
        ("step", "http") => error_as::<http::HttpConfig>(table),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every source type reads its own table for errors: a new one added to
    /// `sources!` is covered without a second list.
    #[test]
    fn each_source_type_names_its_own_bad_field() {
        let mut types = vec![];
        if cfg!(feature = "file") {
            types.push("file");
        }
        if cfg!(feature = "sqs") {
            types.push("sqs");
        }
        if cfg!(feature = "kafka") {
            types.push("kafka");
        }
        if cfg!(feature = "redis") {
            types.push("redis");
        }
        for ty in types {
            let table: toml_edit::DocumentMut = "nope = 1".parse().unwrap();
            let e = table_error("source", ty, table.as_table().clone())
                .unwrap_or_else(|| panic!("{ty}: no error for an unknown field"));
            assert!(e.to_string().contains("nope"), "{ty}: {e}");
        }
        assert_eq!(snake_case("LaravelRedis"), "laravel_redis");
        assert!(source_table_error("nosuch", toml_edit::Table::new()).is_none());
    }
}
