//! The rolling windows of the metric views, defined once: their names in URLs and flags, the
//! window names the views hold (`last_1h`, `prev_1h`, ...), their spans and the grain of
//! their trend lines. The views' SQL ([`crate::migrations::windows_sql`]), the board's
//! queries and the board itself all read them from here.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A rolling window: the last span up to the current minute, compared with the same span
/// just before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Window {
    Hour,
    Day,
    Week,
}

/// A window name that is none of [`Window::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown window {0:?}; use {list}", list = Window::expected())]
pub struct UnknownWindow(pub String);

impl Window {
    /// Every window, shortest first.
    pub const ALL: [Window; 3] = [Window::Hour, Window::Day, Window::Week];

    /// The name in URLs (`?window=1h`) and flags (`--alert-window 1h`).
    pub const fn name(self) -> &'static str {
        match self {
            Window::Hour => "1h",
            Window::Day => "24h",
            Window::Week => "7d",
        }
    }

    /// The span, in seconds.
    pub const fn secs(self) -> i64 {
        match self {
            Window::Hour => 3600,
            Window::Day => 86400,
            Window::Week => 7 * 86400,
        }
    }

    pub const fn duration(self) -> Duration {
        Duration::from_secs(self.secs() as u64)
    }

    /// The view's name of the current window (`last_1h`): ends with the current minute.
    pub const fn current(self) -> &'static str {
        match self {
            Window::Hour => "last_1h",
            Window::Day => "last_24h",
            Window::Week => "last_7d",
        }
    }

    /// The view's name of the window just before [`Window::current`] (`prev_1h`).
    pub const fn previous(self) -> &'static str {
        match self {
            Window::Hour => "prev_1h",
            Window::Day => "prev_24h",
            Window::Week => "prev_7d",
        }
    }

    /// The `team_metrics` grain of the window's trend line.
    pub const fn trend_grain(self) -> &'static str {
        match self {
            Window::Hour => "minute",
            Window::Day | Window::Week => "hour",
        }
    }

    /// How messages name the current window ("last hour").
    pub const fn label(self) -> &'static str {
        match self {
            Window::Hour => "last hour",
            Window::Day => "last 24 hours",
            Window::Week => "last 7 days",
        }
    }

    /// The accepted names for messages: "1h, 24h or 7d".
    pub fn expected() -> String {
        let names: Vec<&str> = Window::ALL.iter().map(|w| w.name()).collect();
        match names.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => names.join(""),
        }
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Window {
    type Err = UnknownWindow;
    fn from_str(s: &str) -> Result<Self, UnknownWindow> {
        Window::ALL
            .into_iter()
            .find(|w| w.name() == s)
            .ok_or_else(|| UnknownWindow(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_its_names_and_lists_them_when_refusing() {
        for w in Window::ALL {
            assert_eq!(w.name().parse::<Window>(), Ok(w));
            assert_eq!(w.duration().as_secs() as i64, w.secs());
        }
        assert_eq!("24h".parse::<Window>(), Ok(Window::Day));
        let e = "2h".parse::<Window>().unwrap_err();
        assert_eq!(e.to_string(), "unknown window \"2h\"; use 1h, 24h or 7d");
        assert!("last_1h".parse::<Window>().is_err());
    }
}
