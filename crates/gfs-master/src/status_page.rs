//! The master's status page: one server-rendered HTML document from a [`ClusterReport`].
//!
//! A pure function of the report (unit-tested without a server): inline CSS that wraps on a
//! phone, tables in scrolling boxes, human units (`gfs_util::human`), and a small inline script
//! that turns event times into local time and reloads the page every 5 s.

use std::fmt::Write;

use crate::report::{ClusterReport, ServerCondition};
use gfs_util::human::{ago, bytes};

/// Escapes text for HTML.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const STYLE: &str = "body{font:15px/1.4 system-ui,sans-serif;margin:0 auto;max-width:1100px;padding:12px;color:#1d2430}
h1{font-size:1.4em;margin:.2em 0}h2{font-size:1.1em;margin:1.2em 0 .4em}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:8px}
.card{border:1px solid #d5dae1;border-radius:6px;padding:8px}.card b{display:block;font-size:1.3em}
.bad{background:#fde8e8;border-color:#e5a0a0}.warn{background:#fff6e0;border-color:#e8cc80}
.scroll{overflow-x:auto}table{border-collapse:collapse;width:100%;font-size:.95em}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #e3e6ea;white-space:nowrap}
td.n,th.n{text-align:right}.state-dead,.state-disk-lost{color:#b00020;font-weight:600}
.state-draining,.state-drained{color:#8a5a00;font-weight:600}small{color:#5b6572}";

/// The whole page.
pub fn render(r: &ClusterReport) -> String {
    let mut h = String::with_capacity(8 << 10);
    let alive = r
        .servers
        .iter()
        .filter(|s| s.state == ServerCondition::Alive)
        .count();
    let _ = write!(
        h,
        "<!doctype html><html lang=en><head><meta charset=utf-8>\
         <meta name=viewport content=\"width=device-width,initial-scale=1\">\
         <title>gfs master</title><style>{STYLE}</style></head><body>\
         <h1>gfs-rs master</h1><small id=generated data-unix-ms={}>up {} · \
         {alive} of {} chunkservers alive · refreshes every 5 s</small>",
        r.generated_unix_ms,
        ago(r.master_uptime.as_millis() as u64),
        r.servers.len()
    );
    if r.insecure {
        h.push_str(
            "<p class=\"card bad\" id=insecure>TLS is off (<code>insecure = true</code>): every \
             gRPC plane is open to whoever reaches its port.</p>",
        );
    }
    if r.warming_up {
        h.push_str(
            "<p class=\"card warn\" id=warming-up>The master has just started: chunkservers are \
             still reporting, so replica counts may look low and repairs wait.</p>",
        );
    }
    let card = |h: &mut String, id: &str, label: &str, value: String, class: &str| {
        let _ = write!(
            h,
            "<div class=\"card {class}\" id=\"{id}\"><b>{value}</b>{label}</div>"
        );
    };
    h.push_str("<h2>Cluster</h2><div class=cards>");
    card(&mut h, "capacity", "capacity", bytes(r.capacity_bytes), "");
    let pct = if r.capacity_bytes == 0 {
        0.0
    } else {
        r.used_bytes as f64 * 100.0 / r.capacity_bytes as f64
    };
    card(
        &mut h,
        "used",
        &format!("used ({pct:.1}%)"),
        bytes(r.used_bytes),
        "",
    );
    card(&mut h, "files", "files", r.files.to_string(), "");
    card(&mut h, "chunks", "chunks", r.chunks.to_string(), "");
    let flag = |n: u64, class: &'static str| if n > 0 { class } else { "" };
    card(
        &mut h,
        "under-replicated",
        &format!("under-replicated (goal {})", r.replication_goal),
        r.under_replicated.to_string(),
        flag(r.under_replicated, "warn"),
    );
    card(
        &mut h,
        "lost",
        "lost chunks",
        r.lost.to_string(),
        flag(r.lost, "bad"),
    );
    card(
        &mut h,
        "stale",
        "stale replicas",
        r.stale_replicas.to_string(),
        flag(r.stale_replicas, "warn"),
    );
    card(
        &mut h,
        "repair-queue",
        &format!("waiting for a copy ({} copying)", r.copies_in_flight),
        r.repair_queue.to_string(),
        "",
    );
    card(
        &mut h,
        "trash",
        "in the trash",
        r.trash_entries.to_string(),
        "",
    );
    h.push_str("</div>");
    if !r.masters.is_empty() {
        h.push_str(
            "<h2>Masters</h2><div class=scroll><table id=masters><thead><tr><th>id</th>\
             <th>address</th><th>role</th><th class=n>term</th><th class=n>log index</th>\
             <th class=n>lag</th></tr></thead><tbody>",
        );
        for m in &r.masters {
            let _ = write!(
                h,
                "<tr data-id=\"{id}\"><td>{id}</td><td>{addr}</td><td>{role}</td>\
                 <td class=n>{term}</td><td class=n>{index}</td><td class=n>{lag}</td></tr>",
                id = m.id,
                addr = esc(&m.addr),
                role = if m.leader { "leader" } else { "follower" },
                term = m.term,
                index = m.matched_index,
                lag = m.lag,
            );
        }
        h.push_str("</tbody></table></div>");
    }
    h.push_str(
        "<h2>Chunkservers</h2><div class=scroll><table id=servers><thead><tr>\
        <th>id</th><th>address</th><th>rack</th><th>state</th><th class=n>last heartbeat</th>\
        <th class=n>chunks</th><th class=n>used</th><th class=n>free</th>\
        <th class=n>copies in/out</th><th class=n>copied in/out</th></tr></thead><tbody>",
    );
    for s in &r.servers {
        let _ = write!(
            h,
            "<tr data-id=\"{id}\"><td>{id}</td><td>{addr}</td><td>{rack}</td>\
             <td class=\"state-{cls}\">{state}</td><td class=n>{hb} ago</td><td class=n>{chunks}</td>\
             <td class=n>{used}</td><td class=n>{free}</td><td class=n>{ci} / {co}</td>\
             <td class=n>{bi} / {bo}</td></tr>",
            id = esc(&s.id),
            addr = esc(&s.data_addr),
            rack = if s.rack.is_empty() {
                "—".to_string()
            } else {
                esc(&s.rack)
            },
            cls = s.state.as_str().replace(' ', "-"),
            state = s.state.as_str(),
            hb = ago(s.since_heartbeat.as_millis() as u64),
            chunks = s.chunks,
            used = bytes(s.used_bytes),
            free = bytes(s.capacity_bytes.saturating_sub(s.used_bytes)),
            ci = s.copies_in,
            co = s.copies_out,
            bi = bytes(s.copied_in_bytes),
            bo = bytes(s.copied_out_bytes),
        );
    }
    if r.servers.is_empty() {
        h.push_str("<tr><td colspan=10>no chunkserver has registered</td></tr>");
    }
    h.push_str(
        "</tbody></table></div><h2>Recent events</h2><div class=scroll><table id=events><tbody>",
    );
    for e in r.events.iter().take(50) {
        let _ = write!(
            h,
            "<tr class=\"event-{kind}\"><td class=ts data-unix-ms={ms}>{ms}</td><td>{kind}</td><td>{text}</td></tr>",
            ms = e.unix_ms,
            kind = esc(&e.kind),
            text = esc(&e.text)
        );
    }
    if r.events.is_empty() {
        h.push_str("<tr><td>nothing has happened yet</td></tr>");
    }
    // Local times for the timestamps, and a refresh that keeps the scroll position.
    h.push_str(
        "</tbody></table></div><script>\
         for(const td of document.querySelectorAll('td.ts')){\
         td.textContent=new Date(Number(td.dataset.unixMs)).toLocaleString();}\
         setTimeout(()=>location.reload(),5000);</script></body></html>",
    );
    h
}

#[cfg(test)]
mod tests {
    use crate::events::Event;
    use crate::report::ServerReport;

    use super::*;

    #[test]
    fn the_page_lists_every_server_and_escapes_text() {
        let r = ClusterReport {
            chunks: 7,
            lost: 1,
            servers: vec![
                ServerReport {
                    id: "cs<1>".into(),
                    state: ServerCondition::Alive,
                    ..ServerReport::default()
                },
                ServerReport {
                    id: "cs2".into(),
                    state: ServerCondition::Dead,
                    ..ServerReport::default()
                },
            ],
            events: vec![Event {
                unix_ms: 1,
                kind: "server-dead".into(),
                text: "chunkserver cs2 & co".into(),
            }],
            ..ClusterReport::default()
        };
        let page = render(&r);
        assert!(page.contains("<tr data-id=\"cs&lt;1&gt;\">"));
        assert!(page.contains("<tr data-id=\"cs2\">"));
        assert!(page.contains("class=\"state-dead\">dead"));
        assert!(page.contains("chunkserver cs2 &amp; co"));
        assert!(page.contains("<div class=\"card bad\" id=\"lost\"><b>1</b>"));
        assert!(!page.contains("id=insecure"), "TLS on: no warning");
        let page = render(&ClusterReport {
            insecure: true,
            ..r
        });
        assert!(page.contains("id=insecure>TLS is off"));
    }
}
