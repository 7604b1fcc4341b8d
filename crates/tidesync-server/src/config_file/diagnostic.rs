//! What is wrong with a configuration, where, and what to do about it.
//!
//! A problem in the file is placed at `FILE:LINE:COL` (1-based, columns counted in
//! characters) from the byte span the TOML parser gave; a problem in an environment
//! variable names the variable; a file that cannot be read names the file.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem with a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Where the problem is.
    pub at: Location,
    /// What is wrong.
    pub message: String,
    /// How to fix it, when there is more to say than the message does.
    pub hint: Option<String>,
}

/// Where a [`Diagnostic`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A position in the configuration file.
    File {
        /// The file as it was named.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column, in characters.
        column: usize,
    },
    /// The file as a whole (it cannot be read).
    WholeFile(PathBuf),
    /// An environment variable.
    Env(&'static str),
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.at {
            Location::File { path, line, column } => {
                write!(f, "{}:{line}:{column}: {}", path.display(), self.message)?;
            }
            Location::WholeFile(path) => write!(f, "{}: {}", path.display(), self.message)?,
            Location::Env(name) => write!(f, "environment variable {name}: {}", self.message)?,
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// Every problem found in a configuration (at least one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    /// The file that was read, if any.
    pub file: Option<PathBuf>,
    /// The problems, in the order of the file (then the environment).
    pub diagnostics: Vec<Diagnostic>,
}

impl ConfigErrors {
    /// One line that sums the problems up, e.g. `tidesync.toml: 3 errors`.
    pub fn summary(&self) -> String {
        let n = self.diagnostics.len();
        let errors = if n == 1 {
            "1 error"
        } else {
            &format!("{n} errors")
        };
        match &self.file {
            Some(path) => format!("the configuration file {} has {errors}", path.display()),
            None => format!("the configuration has {errors}"),
        }
    }
}

/// Every diagnostic on its own line(s), then the summary.
impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.diagnostics {
            writeln!(f, "{d}")?;
        }
        write!(f, "{}", self.summary())
    }
}

impl std::error::Error for ConfigErrors {}

/// The text of the configuration file, to turn byte spans into lines and columns (empty
/// when there is no file).
#[derive(Debug, Default)]
pub(crate) struct SourceText {
    pub path: PathBuf,
    pub text: String,
}

impl SourceText {
    /// The 1-based line and column of byte `offset`.
    fn line_column(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = self.text.get(..offset).unwrap_or(&self.text);
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        (line, column)
    }

    /// A location at the start of `span`.
    pub fn locate(&self, span: &Range<usize>) -> Location {
        let (line, column) = self.line_column(span.start);
        Location::File {
            path: self.path.clone(),
            line,
            column,
        }
    }

    /// The directory relative paths in the file are resolved against.
    pub fn base_dir(&self) -> &Path {
        match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        }
    }
}

/// Collects diagnostics while a configuration is resolved, so that every problem is
/// reported, not only the first.
#[derive(Debug, Default)]
pub(crate) struct Diagnostics {
    pub list: Vec<Diagnostic>,
}

impl Diagnostics {
    /// A problem at `span` of the file.
    pub fn at(
        &mut self,
        source: &SourceText,
        span: &Range<usize>,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        self.list.push(Diagnostic {
            at: source.locate(span),
            message: message.into(),
            hint,
        });
    }

    /// A problem in an environment variable.
    pub fn env(&mut self, name: &'static str, message: impl Into<String>, hint: Option<String>) {
        self.list.push(Diagnostic {
            at: Location::Env(name),
            message: message.into(),
            hint,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_lines_and_character_columns() {
        let source = SourceText {
            path: "t.toml".into(),
            text: "a = 1\n# é\nbé = 2\n".into(),
        };
        assert_eq!(source.line_column(0), (1, 1));
        assert_eq!(source.line_column(4), (1, 5));
        assert_eq!(source.line_column(6), (2, 1));
        // "bé = 2": 'é' is two bytes, one column.
        let eq = source.text.find("= 2").expect("in text");
        assert_eq!(source.line_column(eq), (3, 4));
        assert_eq!(source.line_column(10_000), (4, 1));
    }
}
