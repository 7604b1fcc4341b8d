//! HTML building blocks: escaping (every value that reaches a page goes through
//! [`Escaped`]), the page frame with its inline style, the login page, and number and time
//! formats.
//!
//! The pages load nothing: the style and the only script (the live rates) are inline,
//! allowed by a per-response nonce in the `Content-Security-Policy` (no `'unsafe-inline'`).

use std::fmt::{self, Display, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A value written with `&`, `<`, `>`, `"` and `'` escaped: safe in element content and in
/// quoted attribute values.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Escaped<'a>(pub &'a str);

impl Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..at])?;
            f.write_str(match rest.as_bytes()[at] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[at + 1..];
        }
        f.write_str(rest)
    }
}

/// `n` with thousands separators: `1,234,567`.
pub(crate) fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// How long ago `at` was, roughly: `4 s ago`, `12 min ago`, `3 h ago`, `2 d ago`.
pub(crate) fn ago(at: SystemTime, now: SystemTime) -> String {
    let secs = now.duration_since(at).unwrap_or(Duration::ZERO).as_secs();
    match secs {
        0..60 => format!("{secs} s ago"),
        60..3_600 => format!("{} min ago", secs / 60),
        3_600..86_400 => format!("{} h ago", secs / 3_600),
        _ => format!("{} d ago", secs / 86_400),
    }
}

/// `at` in UTC, `2026-12-04 18:06:34Z`.
pub(crate) fn utc(at: SystemTime) -> String {
    let secs = at
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z",
        rest / 3_600,
        rest / 60 % 60,
        rest % 60
    )
}

/// The style of every admin page.
const STYLE: &str = r#"
:root { color-scheme: light; --ink: #1d2330; --muted: #5d6677; --line: #e2e6ee;
  --panel: #ffffff; --bg: #f4f6fa; --accent: #2456c7; --bad: #b3261e; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: var(--ink); background: var(--bg); }
header { display: flex; align-items: baseline; gap: 16px; padding: 14px 28px;
  background: var(--ink); color: #fff; }
header h1 { margin: 0; font-size: 17px; font-weight: 600; }
header .meta { color: #b9c1d3; font-size: 13px; }
header form { margin-left: auto; }
header button { background: transparent; color: #dfe5f2; border: 1px solid #56607a;
  border-radius: 4px; padding: 3px 10px; font: inherit; cursor: pointer; }
main { max-width: 1180px; margin: 0 auto; padding: 20px 28px 40px; }
section { background: var(--panel); border: 1px solid var(--line); border-radius: 8px;
  margin: 0 0 18px; padding: 14px 18px; }
h2 { margin: 0 0 4px; font-size: 15px; }
p.note { margin: 0 0 10px; color: var(--muted); font-size: 12.5px; }
table { width: 100%; border-collapse: collapse; }
th, td { text-align: left; padding: 5px 8px; border-top: 1px solid var(--line);
  vertical-align: baseline; }
th { color: var(--muted); font-weight: 600; font-size: 12.5px; border-top: none; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
td.mono { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12.5px;
  overflow-wrap: break-word; }
td.nowrap { white-space: nowrap; }
td.code { color: var(--bad); font-family: ui-monospace, SFMono-Regular, Menlo, monospace;
  font-size: 12.5px; white-space: nowrap; }
td.empty { color: var(--muted); font-style: italic; }
.rates { display: grid; grid-template-columns: repeat(auto-fill, minmax(135px, 1fr));
  gap: 10px; }
.rate { border: 1px solid var(--line); border-radius: 6px; padding: 8px 12px; }
.rate .v { font-size: 22px; font-weight: 600; font-variant-numeric: tabular-nums; }
.rate .l { color: var(--muted); font-size: 12px; }
.rate .t { color: var(--muted); font-size: 11.5px; font-variant-numeric: tabular-nums; }
.login { max-width: 420px; margin: 12vh auto; }
.login input { width: 100%; padding: 8px 10px; font: inherit; border: 1px solid #b9c1d3;
  border-radius: 4px; margin: 8px 0 12px; }
.login button { background: var(--accent); color: #fff; border: 0; border-radius: 4px;
  padding: 8px 16px; font: inherit; cursor: pointer; }
.error { color: var(--bad); }
"#;

/// A whole page: `title` (escaped here), `body` (already HTML), its style allowed by the
/// response's `nonce`.
pub(crate) fn page(title: &str, body: &str, nonce: &str) -> String {
    let mut out = String::with_capacity(body.len() + STYLE.len() + 400);
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"robots\" content=\"noindex\">\
         <title>{}</title><style nonce=\"{}\">{STYLE}</style></head><body>{body}</body></html>\n",
        Escaped(title),
        Escaped(nonce)
    );
    out
}

/// The login page, with `problem` (if any) shown above the form.
pub(crate) fn login(problem: Option<&str>, nonce: &str) -> String {
    let problem = problem
        .map(|p| format!("<p class=\"error\" id=\"problem\">{}</p>", Escaped(p)))
        .unwrap_or_default();
    page(
        "tidesync admin: sign in",
        &format!(
            "<main><section class=\"login\"><h2>tidesync admin</h2>\
             <p class=\"note\">Enter the admin token this server was started with \
             (<code>TIDESYNC_ADMIN_TOKEN</code> or <code>[admin]</code> in its \
             configuration).</p>{problem}\
             <form method=\"post\" action=\"/admin/login\">\
             <label for=\"token\">Admin token</label>\
             <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" \
             required autofocus>\
             <button type=\"submit\">Sign in</button></form></section></main>"
        ),
        nonce,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_markup_character_is_escaped() {
        let hostile = r#"<script>alert("x")</script> & 'y'"#;
        let escaped = Escaped(hostile).to_string();
        assert_eq!(
            escaped,
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
        assert_eq!(Escaped("plain ünïcode").to_string(), "plain ünïcode");
    }

    #[test]
    fn numbers_and_times_read_naturally() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1_000), "1,000");
        assert_eq!(count(1_234_567), "1,234,567");
        let t = UNIX_EPOCH + Duration::from_secs(1_796_407_594); // 2026-12-04 18:06:34
        assert_eq!(utc(t), "2026-12-04 18:06:34Z");
        assert_eq!(utc(UNIX_EPOCH), "1970-01-01 00:00:00Z");
        assert_eq!(
            utc(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29 00:00:00Z"
        );
        assert_eq!(ago(t, t + Duration::from_secs(5)), "5 s ago");
        assert_eq!(ago(t, t + Duration::from_secs(600)), "10 min ago");
        assert_eq!(ago(t + Duration::from_secs(9), t), "0 s ago");
    }
}
