//! The board's reads, timed. The SQL and its rows live in
//! [`feedback_clickhouse::queries::board`]; here each call is observed in
//! `feedback_board_query_seconds` and a failure becomes a message saying what to check.

use std::time::Instant;

use feedback_clickhouse::queries::board;
use feedback_clickhouse::{Ch, Window};
use prometheus::Histogram;

pub use feedback_clickhouse::queries::board::{
    BreakdownRow, CommentRow, HealthRow, SquaresRow, TeamHealthRow, TrendRow, WindowCounts,
    WindowRow, Windows,
};

/// Runs queries against one database and times them.
#[derive(Clone)]
pub struct Queries {
    pub ch: Ch,
    pub seconds: Histogram,
}

impl Queries {
    async fn timed<T>(
        &self,
        q: impl std::future::Future<Output = Result<T, feedback_clickhouse::Error>>,
    ) -> anyhow::Result<T> {
        let started = Instant::now();
        let r = q.await;
        self.seconds.observe(started.elapsed().as_secs_f64());
        r.map_err(|e| {
            anyhow::anyhow!(
                "ClickHouse query failed ({e}); is ClickHouse up and the schema migrated (`feedback migrate`)?"
            )
        })
    }

    pub async fn windows(&self, window: Window, team: Option<&str>) -> anyhow::Result<Windows> {
        self.timed(board::windows(&self.ch, window, team)).await
    }

    pub async fn trend(&self, window: Window, team: Option<&str>) -> anyhow::Result<Vec<TrendRow>> {
        self.timed(board::trend(&self.ch, window, team)).await
    }

    pub async fn breakdown(
        &self,
        team: Option<&str>,
        window: Window,
    ) -> anyhow::Result<Vec<BreakdownRow>> {
        self.timed(board::breakdown(&self.ch, team, window)).await
    }

    pub async fn comments(
        &self,
        team: Option<&str>,
        limit: u64,
    ) -> anyhow::Result<Vec<CommentRow>> {
        self.timed(board::comments(&self.ch, team, limit)).await
    }

    pub async fn health(&self) -> anyhow::Result<Vec<TeamHealthRow>> {
        self.timed(board::health(&self.ch)).await
    }

    pub async fn ces_squares(&self, window: Window) -> anyhow::Result<Vec<SquaresRow>> {
        self.timed(board::ces_squares(&self.ch, window)).await
    }
}
