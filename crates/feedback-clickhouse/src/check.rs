//! The sink's startup check: every column it writes exists with the type it serializes.

use serde::Deserialize;

use crate::{Ch, Error};

/// One column the sink cannot write as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnProblem {
    Missing {
        table: String,
        column: String,
        want: String,
    },
    Mistyped {
        table: String,
        column: String,
        want: String,
        have: String,
    },
}

impl std::fmt::Display for ColumnProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ColumnProblem::Missing {
                table,
                column,
                want,
            } => write!(f, "column {table}.{column} ({want}) is missing"),
            ColumnProblem::Mistyped {
                table,
                column,
                want,
                have,
            } => write!(
                f,
                "column {table}.{column} has type {have}, the sink writes {want}"
            ),
        }
    }
}

fn same_type(want: &str, have: &str) -> bool {
    let strip = |t: &str| {
        t.strip_prefix("LowCardinality(")
            .and_then(|r| r.strip_suffix(')'))
            .map(str::to_string)
            .unwrap_or_else(|| t.to_string())
    };
    strip(want) == strip(have)
}

impl Ch {
    /// Compares `tables` (name, [(column, type)]) with `system.columns`.
    pub async fn check_columns(
        &self,
        tables: &[(&str, &[(&str, &str)])],
    ) -> Result<Vec<ColumnProblem>, Error> {
        #[derive(clickhouse::Row, Deserialize)]
        struct C {
            table: String,
            name: String,
            r#type: String,
        }
        let have: Vec<C> = self
            .fetch("SELECT table, name, type FROM system.columns WHERE database = '{db}'")
            .await?;
        let mut problems = Vec::new();
        for (table, columns) in tables {
            for (column, want) in columns.iter() {
                match have.iter().find(|c| c.table == *table && c.name == *column) {
                    None => problems.push(ColumnProblem::Missing {
                        table: format!("{}.{table}", self.database()),
                        column: column.to_string(),
                        want: want.to_string(),
                    }),
                    Some(c) if !same_type(want, &c.r#type) => {
                        problems.push(ColumnProblem::Mistyped {
                            table: format!("{}.{table}", self.database()),
                            column: column.to_string(),
                            want: want.to_string(),
                            have: c.r#type.clone(),
                        })
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(problems)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn low_cardinality_is_the_same_type() {
        assert!(super::same_type("String", "LowCardinality(String)"));
        assert!(!super::same_type("String", "Nullable(String)"));
        assert!(!super::same_type("Int64", "Int32"));
    }
}
