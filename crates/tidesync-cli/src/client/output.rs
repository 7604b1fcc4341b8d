//! Human or JSON output, decided once per command.

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
        if self.json {
            println!("{json}");
        } else {
            let text = human();
            if text.ends_with('\n') {
                print!("{text}");
            } else {
                println!("{text}");
            }
        }
    }
}
