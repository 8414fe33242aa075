//! Which ClickHouse errors are worth retrying, and which mean the rows themselves are bad.
//!
//! A data error (type mismatch, unparsable or incorrect data, a value a check rejects)
//! will fail the same way forever: the rows go to dead letters. Everything else (connection
//! refused or reset, timeouts, too many parts, a server shutting down, a missing table
//! while someone migrates, other 5xx) is retried while Kafka holds the backlog.

use crate::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The server refused these rows; retrying cannot help.
    Rejected,
    /// Transient or operational; retry with backoff. `reason` is a bounded label.
    Retriable { reason: &'static str },
}

/// ClickHouse exception codes that are about the data of an INSERT (stable across
/// versions; names from `src/Common/ErrorCodes.cpp`).
pub const DATA_ERROR_CODES: &[u32] = &[
    6,   // CANNOT_PARSE_TEXT
    26,  // CANNOT_PARSE_QUOTED_STRING
    27,  // CANNOT_PARSE_INPUT_ASSERTION_FAILED
    32,  // ATTEMPT_TO_READ_AFTER_EOF
    33,  // CANNOT_READ_ALL_DATA
    38,  // CANNOT_PARSE_DATE
    41,  // CANNOT_PARSE_DATETIME
    53,  // TYPE_MISMATCH
    69,  // ARGUMENT_OUT_OF_BOUND
    70,  // CANNOT_CONVERT_TYPE
    72,  // CANNOT_PARSE_NUMBER
    117, // INCORRECT_DATA
    131, // TOO_LARGE_STRING_SIZE
    321, // VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
    395, // FUNCTION_THROW_IF_VALUE_IS_NON_ZERO (a check expressed with throwIf)
    469, // VIOLATED_CONSTRAINT
];

/// The `Code: N` of a ClickHouse exception text.
pub fn code(text: &str) -> Option<u32> {
    let i = text.find("Code: ")?;
    let digits: String = text[i + 6..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

/// Classifies the error text of a failed INSERT.
pub fn classify_text(text: &str) -> Class {
    let lower = text.to_ascii_lowercase();
    match code(text) {
        // "Too many partitions for single INSERT block" shares code 252 with "too many
        // parts"; the former is about the rows (event times spread over >100 months).
        Some(252) if lower.contains("single insert block") => Class::Rejected,
        Some(252) => Class::Retriable {
            reason: "too_many_parts",
        },
        Some(c) if DATA_ERROR_CODES.contains(&c) => Class::Rejected,
        Some(16) | Some(60) | Some(81) => Class::Retriable { reason: "schema" },
        Some(_) if lower.contains("shutdown") || lower.contains("shutting down") => {
            Class::Retriable { reason: "shutdown" }
        }
        Some(_) => Class::Retriable {
            reason: "server_error",
        },
        None if lower.contains("timeout") || lower.contains("timed out") => {
            Class::Retriable { reason: "timeout" }
        }
        None if lower.starts_with("bad response") => Class::Retriable {
            reason: "server_error",
        },
        None => Class::Retriable {
            reason: "connection",
        },
    }
}

pub fn classify(e: &Error) -> Class {
    match e {
        Error::Server { source, .. } => match source {
            clickhouse::error::Error::TimedOut => Class::Retriable { reason: "timeout" },
            clickhouse::error::Error::Network(_) => Class::Retriable {
                reason: "connection",
            },
            other => classify_text(&other.to_string()),
        },
        Error::Insert { error, .. } => classify_text(error),
        Error::BadDatabase(_) => Class::Retriable {
            reason: "server_error",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_server_texts() {
        let t = |s| classify_text(s);
        assert_eq!(
            t("bad response: Code: 53, e.displayText() = DB::Exception: Type mismatch"),
            Class::Rejected
        );
        assert_eq!(t("Code: 395, e.displayText() = DB::Exception: Value passed to 'throwIf' function is non zero"), Class::Rejected);
        assert_eq!(
            t("Code: 117. DB::Exception: Incorrect data"),
            Class::Rejected
        );
        assert_eq!(t("Code: 252, e.displayText() = DB::Exception: Too many parts (300). Merges are processing significantly slower than inserts"), Class::Retriable { reason: "too_many_parts" });
        assert_eq!(t("Code: 252, e.displayText() = DB::Exception: Too many partitions for single INSERT block (more than 100)"), Class::Rejected);
        assert_eq!(
            t("Code: 60, e.displayText() = DB::Exception: Table x.y doesn't exist."),
            Class::Retriable { reason: "schema" }
        );
        assert_eq!(
            t("Code: 241, e.displayText() = DB::Exception: Memory limit exceeded"),
            Class::Retriable {
                reason: "server_error"
            }
        );
        assert_eq!(
            t("bad response: 503 Service Unavailable"),
            Class::Retriable {
                reason: "server_error"
            }
        );
        assert_eq!(code("xx Code: 1002. DB::Exception"), Some(1002));
    }
}
