//! The one error type of the configuration module.
//!
//! Every error names what the operator has to fix: a dotted key path
//! (`timeouts.connect`, `backend[0].address`) or a flag (`--backend`), the
//! value as it was written, and the line of the file it sits on.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Longest excerpt of a bad value quoted back in a message; a whole
/// multi-line table would drown the explanation.
const MAX_SNIPPET_CHARS: usize = 60;

/// Why a configuration could not be loaded, with the key (or flag) and the
/// line to look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    file: Option<PathBuf>,
    key: Option<String>,
    /// Rendered before the line number: `timeouts.connect = "5x"`,
    /// `unknown key 'health.foo'`, `--listen "nope"`, ...
    subject: String,
    line: Option<usize>,
    message: String,
}

impl ConfigError {
    /// A bad value in the file: quotes the value as written.
    pub(super) fn value(
        text: &str,
        key: &str,
        span: Range<usize>,
        message: impl Into<String>,
    ) -> Self {
        let subject = match snippet(text, span.clone()) {
            Some(value) => format!("{key} = {value}"),
            None => key.to_string(),
        };
        ConfigError {
            file: None,
            key: Some(key.to_string()),
            subject,
            line: Some(line_of(text, span.start)),
            message: message.into(),
        }
    }

    /// A problem with a key as a whole (missing, or a table of the wrong shape),
    /// where quoting the value would not help.
    pub(super) fn at_key(key: &str, line: Option<usize>, message: impl Into<String>) -> Self {
        ConfigError {
            file: None,
            key: Some(key.to_string()),
            subject: key.to_string(),
            line,
            message: message.into(),
        }
    }

    pub(super) fn unknown_key(key: &str, line: Option<usize>, message: impl Into<String>) -> Self {
        ConfigError {
            file: None,
            key: Some(key.to_string()),
            subject: format!("unknown key '{key}'"),
            line,
            message: message.into(),
        }
    }

    /// The file is not TOML at all, so there is no key to name, only a line.
    pub(super) fn syntax(line: Option<usize>, message: impl Into<String>) -> Self {
        ConfigError {
            file: None,
            key: None,
            subject: "invalid TOML".to_string(),
            line,
            message: message.into(),
        }
    }

    /// A bad command-line flag; `flag` is spelled as typed (`--backend`).
    pub(super) fn flag(flag: &str, value: &str, message: impl Into<String>) -> Self {
        ConfigError {
            file: None,
            key: Some(flag.to_string()),
            subject: format!("{flag} {value:?}"),
            line: None,
            message: message.into(),
        }
    }

    pub(super) fn read(path: &Path, err: &std::io::Error) -> Self {
        ConfigError {
            file: Some(path.to_path_buf()),
            key: None,
            subject: "cannot read config file".to_string(),
            line: None,
            message: err.to_string(),
        }
    }

    pub(super) fn in_file(mut self, path: &Path) -> Self {
        self.file = Some(path.to_path_buf());
        self
    }

    /// The dotted key path (`limits.max_connections`, `backend[1].name`) or
    /// the flag (`--backend`) the error is about, if any.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// 1-based line in the configuration file, when the error came from one.
    pub fn line(&self) -> Option<usize> {
        self.line
    }

    /// The configuration file, when the error came from [`Config::load`](super::Config::load).
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// What is wrong and what is expected, without the key and line prefix.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}: ", file.display())?;
        }
        f.write_str(&self.subject)?;
        if let Some(line) = self.line {
            write!(f, " on line {line}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// 1-based line number of a byte offset; toml reports byte spans.
pub(super) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The source text of a value, cut to its first line and a readable length.
fn snippet(text: &str, span: Range<usize>) -> Option<String> {
    let raw = text.get(span)?.trim();
    if raw.is_empty() {
        return None;
    }
    let first_line = raw.lines().next().unwrap_or(raw);
    let mut out: String = first_line.chars().take(MAX_SNIPPET_CHARS).collect();
    if out.len() < raw.len() {
        out.push('…');
    }
    Some(out)
}
