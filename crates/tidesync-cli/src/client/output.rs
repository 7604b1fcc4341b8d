//! Human or JSON output, decided once per command.

use std::io::Write;

use serde_json::Value;

/// Where a command's result goes: stdout, as text or as one JSON document.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// `--json`.
    pub json: bool,
}

impl Output {
    /// Prints `json` under `--json`, else the text `human` builds.
    pub fn emit(self, json: Value, human: impl FnOnce() -> String) {
        let mut text = if self.json { json.to_string() } else { human() };
        if !text.ends_with('\n') {
            text.push('\n');
        }
        write_stdout(&text);
    }
}

/// Writes `text` to stdout. A reader that went away (`tidesync client pending | head`) ends
/// the command quietly, as a Unix tool does, instead of a panic; another write error is one
/// `error:` line and exit code 1.
fn write_stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write the output: {e}");
        std::process::exit(1);
    }
}
