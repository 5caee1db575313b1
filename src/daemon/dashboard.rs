//! The dashboard: one server-rendered page (links, open conflicts side by side, the
//! quarantine, the journal, `explain`) with a little JavaScript for the buttons, which
//! call the same API a script would. No build step, no assets of its own.

use super::Shared;
use super::server::display_key;
use crate::Error;
use crate::model::Value;
use crate::state::StateStore;
use std::collections::HashMap;
use std::fmt::Write;

fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn values(v: &[Value]) -> String {
    v.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn page(
    shared: &Shared,
    state: &mut StateStore,
    query: &HashMap<String, String>,
) -> Result<String, Error> {
    let config = shared.config();
    let admin = config.watch.admin_token.is_some();
    let mut html = String::new();
    let _ = write!(
        html,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>syncline</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }}
h1 {{ font-size: 1.4em; }} h2 {{ font-size: 1.1em; margin-top: 1.8em; }}
table {{ border-collapse: collapse; margin: .5em 0; }}
td, th {{ border: 1px solid #ccc; padding: .3em .6em; text-align: left; vertical-align: top; }}
th {{ background: #f3f3f3; }} .bad {{ color: #a00; }} .ok {{ color: #070; }}
.note {{ color: #666; }} input {{ font: inherit; }} button {{ font: inherit; cursor: pointer; }}
#message {{ font-weight: bold; }}
</style></head><body>
<h1>syncline</h1>
<p class="note">{mode}</p>
<p id="message" role="status"></p>
"#,
        mode = if admin {
            "Changes need the admin token; each is journaled with who made it."
        } else {
            "Read-only: set [watch] admin_token in the config to resolve and release here."
        }
    );
    if admin {
        html.push_str(
            r#"<p><label>Admin token <input id="token" type="password" autocomplete="off"></label>
<label>Your name <input id="user" type="text"></label></p>
"#,
        );
    }

    html.push_str("<h2>Links</h2><table id=\"links\"><tr><th>link</th><th>shape</th><th>every</th><th>last cycle</th><th>outcome</th><th>reading</th><th>change feed lag</th></tr>");
    for s in shared.statuses() {
        let outcome = s
            .last_outcome
            .clone()
            .unwrap_or_else(|| "not run yet".into());
        let class = if outcome == "failed" || outcome == "refused" {
            "bad"
        } else {
            "ok"
        };
        let lag = s
            .feeds
            .iter()
            .map(|f| {
                format!(
                    "{} ({}): {:.1} s, {} bytes held",
                    f.side, f.slot, f.lag_seconds, f.retained_bytes
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{} s</td><td>{}</td><td class=\"{class}\">{}{}</td><td>{}</td><td>{}</td></tr>",
            esc(&s.link),
            esc(&s.shape),
            s.every_seconds,
            esc(s.last_finished.as_deref().unwrap_or("")),
            esc(&outcome),
            s.last_error
                .as_deref()
                .map(|e| format!(": {}", esc(e)))
                .unwrap_or_default(),
            esc(s.last_reading.as_deref().unwrap_or("")),
            esc(&lag),
        );
    }
    html.push_str("</table>");

    html.push_str("<h2>Last runs</h2><table id=\"runs\"><tr><th>run</th><th>started</th><th>finished</th><th>command</th><th>status</th></tr>");
    for run in state.last_runs(10)? {
        let field = |name: &str| run[name].as_str().unwrap_or("").to_string();
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            run["run"],
            esc(&field("started_at")),
            esc(&field("finished_at")),
            esc(&field("command")),
            esc(&field("status")),
        );
    }
    html.push_str("</table>");

    let open: Vec<_> = state
        .conflicts(None)?
        .into_iter()
        .filter(|c| c.status == "open")
        .collect();
    let _ = write!(html, "<h2>Open conflicts ({})</h2>", open.len());
    if open.is_empty() {
        html.push_str("<p class=\"note\" id=\"no-conflicts\">None.</p>");
    } else {
        html.push_str("<table id=\"conflicts\"><tr><th>link</th><th>record</th><th>field</th><th>left</th><th>right</th><th>base (last agreed)</th><th>why</th><th>decide</th></tr>");
        for c in &open {
            let key = display_key(&c.left_key);
            let data = format!(
                "data-link=\"{}\" data-key=\"left:{}\" data-field=\"{}\"",
                esc(&c.link),
                esc(&key),
                esc(&c.unit)
            );
            let decide = if admin {
                format!(
                    "<button class=\"take-left\" {data}>Take left</button> <button class=\"take-right\" {data}>Take right</button> <input class=\"typed\" size=\"10\" aria-label=\"value\"> <button class=\"use-value\" {data}>Use value</button>"
                )
            } else {
                "<span class=\"note\">read-only</span>".into()
            };
            let _ = write!(
                html,
                "<tr class=\"conflict\"><td>{}</td><td>{}</td><td>{}</td><td class=\"left\">{}</td><td class=\"right\">{}</td><td>{}</td><td>{}</td><td>{decide}</td></tr>",
                esc(&c.link),
                esc(&key),
                esc(&c.unit),
                esc(&values(&c.left_value)),
                esc(&values(&c.right_value)),
                esc(&c
                    .base_value
                    .as_deref()
                    .map(values)
                    .unwrap_or_else(|| "(none)".into())),
                esc(&c.cause),
            );
        }
        html.push_str("</table>");
    }

    let quarantine = state.quarantine(None)?;
    let _ = write!(html, "<h2>Quarantine ({})</h2>", quarantine.len());
    if quarantine.is_empty() {
        html.push_str("<p class=\"note\">Empty.</p>");
    } else {
        html.push_str("<table id=\"quarantine\"><tr><th>link</th><th>side</th><th>record</th><th>field</th><th>reason</th><th></th></tr>");
        for q in &quarantine {
            let key = display_key(&q.key);
            let release = if admin {
                format!(
                    "<button class=\"release\" data-link=\"{}\" data-key=\"{}\" data-field=\"{}\">Release</button>",
                    esc(&q.link),
                    esc(&key),
                    esc(&q.field)
                )
            } else {
                String::new()
            };
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{release}</td></tr>",
                esc(&q.link),
                q.side,
                esc(&key),
                esc(&q.field),
                esc(&q.reason),
            );
        }
        html.push_str("</table>");
    }

    // The journal, filtered by link and key through the page's own query string.
    let link = query.get("link").filter(|l| !l.is_empty());
    let key = query.get("key").filter(|k| !k.is_empty());
    let encoded = key
        .map(|k| crate::decide::journal_key(state, link.map(String::as_str), k))
        .transpose()?;
    let entries = state.journal(link.map(String::as_str), encoded.as_deref(), None, 50)?;
    let _ = write!(
        html,
        r#"<h2>Journal</h2><form method="get"><label>link <input name="link" value="{}"></label>
<label>key <input name="key" value="{}"></label> <button type="submit">Filter</button></form>
<table id="journal"><tr><th>when</th><th>run</th><th>link</th><th>record</th><th>side</th><th>op</th><th>field</th><th>new</th><th>reason</th><th>status</th></tr>"#,
        esc(link.map_or("", String::as_str)),
        esc(key.map_or("", String::as_str))
    );
    for e in &entries {
        let record = e
            .left_key
            .as_deref()
            .or(e.right_key.as_deref())
            .map(display_key)
            .unwrap_or_default();
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&e.at),
            e.run,
            esc(&e.link),
            esc(&record),
            esc(&e.side),
            esc(&e.op),
            esc(e.field.as_deref().unwrap_or("")),
            esc(&e.new.as_ref().map(ToString::to_string).unwrap_or_default()),
            esc(&e.reason),
            esc(&e.status),
        );
    }
    html.push_str("</table>");

    html.push_str(
        r#"<h2>Explain a record</h2>
<p><label>link <input id="explain-link"></label> <label>key <input id="explain-key" placeholder="left:42"></label>
<button id="explain">Explain</button></p><pre id="explanation"></pre>
"#,
    );
    html.push_str(SCRIPT);
    html.push_str("</body></html>\n");
    Ok(html)
}

const SCRIPT: &str = r#"<script>
function say(text) { document.getElementById('message').textContent = text; }
async function change(path, body) {
  const token = document.getElementById('token');
  const user = document.getElementById('user');
  const answer = await fetch(path, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json',
               'Authorization': 'Bearer ' + (token ? token.value : ''),
               'X-Syncline-User': user ? user.value : '' },
    body: JSON.stringify(body) });
  const reply = await answer.json();
  if (!answer.ok) { say('Refused: ' + reply.error); return; }
  say('Done; the next cycle writes it.');
  setTimeout(() => location.reload(), 600);
}
for (const b of document.querySelectorAll('button.take-left, button.take-right')) {
  b.addEventListener('click', () => change('/api/conflicts/resolve', {
    link: b.dataset.link, key: b.dataset.key, field: b.dataset.field,
    take: b.classList.contains('take-left') ? 'left' : 'right' }));
}
for (const b of document.querySelectorAll('button.use-value')) {
  b.addEventListener('click', () => change('/api/conflicts/resolve', {
    link: b.dataset.link, key: b.dataset.key, field: b.dataset.field,
    value: b.parentElement.querySelector('input.typed').value }));
}
for (const b of document.querySelectorAll('button.release')) {
  b.addEventListener('click', () => change('/api/quarantine/release', {
    link: b.dataset.link, key: b.dataset.key, field: b.dataset.field }));
}
document.getElementById('explain').addEventListener('click', async () => {
  const link = document.getElementById('explain-link').value;
  const key = document.getElementById('explain-key').value;
  const answer = await fetch('/api/explain?link=' + encodeURIComponent(link) + '&key=' + encodeURIComponent(key));
  document.getElementById('explanation').textContent = JSON.stringify(await answer.json(), null, 2);
});
</script>
"#;
