//! The dashboard page: the node's live rates, the spaces, the clients and the recent
//! rejections, rendered on the server from an [`Overview`] and this node's [`Activity`].
//! Every value goes through [`Escaped`]; the one script polls `/admin/metrics.json` and
//! writes numbers with `textContent`.

use std::fmt::Write;
use std::time::SystemTime;

use crate::admin::activity::{Activity, Seen};
use crate::admin::html::{ago, count, page, utc, Escaped};
use crate::metrics::Snapshot;
use crate::storage::overview::{RecordCounts, RECORD_COUNT_CAP};
use crate::storage::Overview;

/// Everything one rendering shows.
#[derive(Debug)]
pub(crate) struct View<'a> {
    pub now: SystemTime,
    pub started: SystemTime,
    pub overview: &'a Overview,
    pub activity: &'a Activity,
    pub metrics: Snapshot,
    /// Rows per table.
    pub limit: usize,
    /// The `Content-Security-Policy` nonce of this response's style and script.
    pub nonce: &'a str,
}

/// The live-rate tiles: the metric (a field of `/admin/metrics.json`), its label, and
/// whether it is a rate (a counter shown per second) or a level (a gauge shown as is).
const TILES: [(&str, &str, bool); 7] = [
    ("pushes", "pushes / s", true),
    ("mutations_applied", "applied / s", true),
    ("mutations_merged", "merged / s", true),
    ("mutations_rejected", "rejected / s", true),
    ("pulls", "pulls / s", true),
    ("changes_pulled", "changes pulled / s", true),
    ("open_event_streams", "open event streams", false),
];

/// The page.
pub(crate) fn render(view: &View<'_>) -> String {
    let mut body = String::with_capacity(16 * 1024);
    header(&mut body, view);
    body.push_str("<main>");
    rates(&mut body, view);
    spaces(&mut body, view);
    clients(&mut body, view);
    rejections(&mut body, view);
    body.push_str("</main>");
    let _ = write!(
        body,
        "<script nonce=\"{}\">{SCRIPT}</script>",
        Escaped(view.nonce)
    );
    page("tidesync admin", &body, view.nonce)
}

fn header(out: &mut String, view: &View<'_>) {
    let _ = write!(
        out,
        "<header><h1>tidesync admin</h1><span class=\"meta\">server {} · this node up since {} \
         ({}) · {} auth failures</span>\
         <form method=\"post\" action=\"/admin/logout\"><button type=\"submit\">Sign out</button></form>\
         </header>",
        Escaped(env!("CARGO_PKG_VERSION")),
        Escaped(&utc(view.started)),
        Escaped(&ago(view.started, view.now).replace(" ago", "")),
        count(view.metrics.auth_failures),
    );
}

fn rates(out: &mut String, view: &View<'_>) {
    let snapshot = serde_json::to_string(&view.metrics).unwrap_or_default();
    let at_ms = millis(view.now);
    let _ = write!(
        out,
        "<section id=\"rates\" data-snapshot=\"{}\" data-at-ms=\"{at_ms}\"><h2>Live rates</h2>\
         <p class=\"note\">This node's metrics (also at <code>/metrics</code>), per second over \
         the last 2 s; totals since it started. Mutations are applied, merged (applied with \
         field conflicts) or rejected. <span id=\"live\">Waiting for the first \
         sample…</span></p><div class=\"rates\">",
        Escaped(&snapshot)
    );
    let value = |name: &str| -> u64 {
        let m = &view.metrics;
        match name {
            "pushes" => m.pushes,
            "mutations_applied" => m.mutations_applied,
            "mutations_merged" => m.mutations_merged,
            "mutations_rejected" => m.mutations_rejected,
            "pulls" => m.pulls,
            "changes_pulled" => m.changes_pulled,
            _ => m.open_event_streams,
        }
    };
    for (name, label, rate) in TILES {
        let (shown, total) = if rate {
            (
                "…".to_owned(),
                format!(
                    "<div class=\"t\"><span data-total=\"{name}\">{}</span> total</div>",
                    count(value(name))
                ),
            )
        } else {
            (count(value(name)), String::new())
        };
        let _ = write!(
            out,
            "<div class=\"rate\"><div class=\"v\" data-metric=\"{name}\">{shown}</div>\
             <div class=\"l\">{label}</div>{total}</div>"
        );
    }
    out.push_str("</div></section>");
}

fn spaces(out: &mut String, view: &View<'_>) {
    let o = view.overview;
    let _ = write!(
        out,
        "<section id=\"spaces\"><h2>Spaces</h2><p class=\"note\">{} of {} spaces, highest \
         version first. Records are counted up to {} per space; deleted ones are tombstones \
         kept so pulls hand out the delete.</p><table><thead><tr><th>space</th>\
         <th class=\"n\">version</th><th class=\"n\">live records</th>\
         <th class=\"n\">deleted records</th></tr></thead><tbody>",
        count(o.spaces.len() as u64),
        count(o.space_count),
        count(RECORD_COUNT_CAP)
    );
    if o.spaces.is_empty() {
        out.push_str(
            "<tr><td class=\"empty\" colspan=\"4\">No space has been written yet.</td></tr>",
        );
    }
    for space in &o.spaces {
        let _ = write!(
            out,
            "<tr><td class=\"mono\">{}</td><td class=\"n\">{}</td>{}</tr>",
            Escaped(&space.space),
            count(space.version),
            record_cells(space.records)
        );
    }
    out.push_str("</tbody></table></section>");
}

fn record_cells(records: RecordCounts) -> String {
    if records.capped {
        format!(
            "<td class=\"n\" colspan=\"2\">more than {} (not counted further)</td>",
            count(RECORD_COUNT_CAP)
        )
    } else {
        format!(
            "<td class=\"n\">{}</td><td class=\"n\">{}</td>",
            count(records.live),
            count(records.deleted)
        )
    }
}

fn clients(out: &mut String, view: &View<'_>) {
    let o = view.overview;
    // Clients this node saw that storage does not list: they only pulled (a client row is
    // made by its first push).
    let room = view.limit.saturating_sub(o.clients.len());
    let unstored: Vec<Seen> = view
        .activity
        .recent_clients(view.limit)
        .into_iter()
        .filter(|seen| {
            !o.clients
                .iter()
                .any(|c| c.client_id == seen.client_id.as_str())
        })
        .take(room)
        .collect();
    let _ = write!(
        out,
        "<section id=\"clients\"><h2>Clients</h2><p class=\"note\">{} of {} clients that \
         pushed: those this node saw most recently, then the highest last seq; then clients \
         this node saw only pulling (no last seq). <em>Last seen</em> is the last push or \
         pull this node served to the client since it started (other nodes keep their \
         own).</p><table><thead><tr><th>client</th><th>owner</th>\
         <th class=\"n\">last seq</th><th>last seen</th></tr></thead><tbody>",
        count(o.clients.len() as u64),
        count(o.client_count)
    );
    if o.clients.is_empty() && unstored.is_empty() {
        out.push_str("<tr><td class=\"empty\" colspan=\"4\">No client yet.</td></tr>");
    }
    for client in &o.clients {
        let seen = view.activity.last_seen(&client.client_id);
        client_row(
            out,
            view,
            &client.client_id,
            &client.user,
            Some(client.last_seq),
            seen,
        );
    }
    for seen in unstored {
        client_row(
            out,
            view,
            seen.client_id.as_str(),
            &seen.user,
            None,
            Some(seen.clone()),
        );
    }
    out.push_str("</tbody></table></section>");
}

fn client_row(
    out: &mut String,
    view: &View<'_>,
    client_id: &str,
    user: &str,
    last_seq: Option<u64>,
    seen: Option<Seen>,
) {
    let seen = match seen {
        Some(seen) => format!(
            "<span title=\"{}\">{} ({})</span>",
            Escaped(&utc(seen.at)),
            Escaped(&ago(seen.at, view.now)),
            seen.request.as_str()
        ),
        None => "<span class=\"empty\">not since this node started</span>".to_owned(),
    };
    let last_seq = last_seq.map_or_else(|| "<span class=\"empty\">none</span>".to_owned(), count);
    let _ = write!(
        out,
        "<tr><td class=\"mono\">{}</td><td>{}</td><td class=\"n\">{last_seq}</td><td>{seen}</td></tr>",
        Escaped(client_id),
        Escaped(user),
    );
}

/// A rejection as the table shows it.
struct Row<'a> {
    at: Option<SystemTime>,
    client_id: &'a str,
    seq: u64,
    code: &'a str,
    message: &'a str,
}

fn rejections(out: &mut String, view: &View<'_>) {
    let recent = view.activity.recent_rejections(view.limit);
    let mut rows: Vec<Row<'_>> = recent
        .iter()
        .map(|r| Row {
            at: Some(r.at),
            client_id: r.client_id.as_str(),
            seq: r.seq,
            code: &r.code,
            message: &r.message,
        })
        .collect();
    for stored in &view.overview.rejections {
        if rows.len() >= view.limit {
            break;
        }
        let known = recent
            .iter()
            .any(|r| r.seq == stored.seq && r.client_id.as_str() == stored.client_id);
        if !known {
            rows.push(Row {
                at: None,
                client_id: &stored.client_id,
                seq: stored.seq,
                code: &stored.code,
                message: &stored.message,
            });
        }
    }
    let _ = write!(
        out,
        "<section id=\"rejections\"><h2>Recent rejections</h2><p class=\"note\">First those \
         this node answered since it started, newest first (with their time); then the \
         stored rejections of the clients above, highest seq first (the database keeps no \
         time for them). At most {}.</p><table><thead><tr><th>when</th><th>client</th>\
         <th class=\"n\">seq</th><th>code</th><th>reason</th></tr></thead><tbody>",
        count(view.limit as u64)
    );
    if rows.is_empty() {
        out.push_str("<tr><td class=\"empty\" colspan=\"5\">No rejections.</td></tr>");
    }
    for row in rows {
        let when = match row.at {
            Some(at) => format!(
                "<span title=\"{}\">{}</span>",
                Escaped(&utc(at)),
                Escaped(&ago(at, view.now))
            ),
            None => "<span class=\"empty\">stored</span>".to_owned(),
        };
        let _ = write!(
            out,
            "<tr><td class=\"nowrap\">{when}</td><td class=\"mono nowrap\">{}</td><td class=\"n\">{}</td>\
             <td class=\"code\">{}</td><td>{}</td></tr>",
            Escaped(row.client_id),
            count(row.seq),
            Escaped(row.code),
            Escaped(row.message)
        );
    }
    out.push_str("</tbody></table></section>");
}

/// Milliseconds since the epoch.
pub(crate) fn millis(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Polls the metrics every 2 s and shows per-second rates between two samples (the first
/// against the snapshot the page was rendered with); stops once signed out. Writes only
/// `textContent`.
const SCRIPT: &str = r#"
(() => {
  const section = document.getElementById("rates");
  const live = document.getElementById("live");
  let last = JSON.parse(section.dataset.snapshot || "null");
  if (last) last.at_ms = Number(section.dataset.atMs);
  const show = (m) => {
    for (const el of section.querySelectorAll("[data-metric]")) {
      const name = el.dataset.metric;
      if (name === "open_event_streams") {
        el.textContent = m[name].toLocaleString("en-US");
      } else if (last) {
        const secs = Math.max((m.at_ms - last.at_ms) / 1000, 0.001);
        el.textContent = Math.max((m[name] - last[name]) / secs, 0).toFixed(1);
      }
    }
    for (const el of section.querySelectorAll("[data-total]")) {
      el.textContent = m[el.dataset.total].toLocaleString("en-US");
    }
  };
  const tick = async () => {
    try {
      const answer = await fetch("/admin/metrics.json", { cache: "no-store", credentials: "same-origin" });
      if (answer.status === 401) {
        clearInterval(timer);
        live.textContent = "Signed out: reload the page to sign in.";
        return;
      }
      if (!answer.ok) { live.textContent = "Metrics unavailable (" + answer.status + ")."; return; }
      const m = await answer.json();
      show(m);
      last = m;
      live.textContent = "Live, updated every 2 s.";
    } catch (e) {
      live.textContent = "Metrics unavailable: is the server up?";
    }
  };
  setTimeout(tick, 1000);
  const timer = setInterval(tick, 2000);
})();
"#;
