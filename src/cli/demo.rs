//! `syncline demo`: a CRM and a billing database that overlap the way real ones do, a
//! config that shows every kind of field rule, and a plan and two runs over them.

use super::output::Output;
use anyhow::{Context, Result, bail};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rusqlite::{Connection, params};
use std::path::Path;
use syncline::config::Config;
use syncline::engine::{self, RunOptions};
use syncline::state::StateStore;

const MARKER: &str = ".syncline-demo";

const CONFIG: &str = r#"# syncline demo: a CRM (left) and a billing system (right), kept in step two-way.
[state]
path = ".syncline/state.db"

[systems.crm]
kind = "sqlite"
path = "crm.db"

[systems.billing]
kind = "sqlite"
path = "billing.db"

[links.contacts]
left = "crm.contacts"
right = "billing.customers"
left_key = "id"
right_key = "customer_id"
mode = "two-way"
match_on = ["email"]          # pairs unlinked records once, trimmed and lowercased
right_ref = "crm_id"          # billing records created by syncline carry the CRM id
on_delete = { left = "propagate", right = "ignore" }
max_delete_fraction = 0.1

[links.contacts.fields]
email  = { right = "email_address", owner = "left", transform = "trim+lowercase" }
name   = { right = "full_name", owner = "left" }
status = { owner = "right" }                    # write-back: billing owns status
phone  = { owner = "both", conflict = "newest", clock = { left = "updated_at", right = "modified_at" } }
notes  = { owner = "both", conflict = "manual" }
street = { owner = "both", conflict = "left-wins" }
city   = { owner = "both", conflict = "left-wins" }
zip    = { owner = "both", conflict = "left-wins" }

[links.contacts.groups]
address = ["street", "city", "zip"]             # decided as one unit
"#;

const FIRST: &[&str] = &[
    "Ada", "Grace", "Alan", "Edsger", "Barbara", "Ken", "Dennis", "Margaret", "Linus", "Radia",
    "Donald", "Frances",
];
const LAST: &[&str] = &[
    "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Thompson", "Ritchie", "Hamilton",
    "Torvalds", "Perlman", "Knuth", "Allen",
];
const CITIES: &[(&str, &str)] = &[
    ("Berlin", "10115"),
    ("Lyon", "69001"),
    ("Porto", "4000"),
    ("Turku", "20100"),
    ("Ghent", "9000"),
];

pub fn run_demo(dir: &Path, contacts: usize, json: bool) -> Result<u8> {
    prepare_dir(dir)?;
    let now = chrono::Utc::now().timestamp();
    let mut rng = StdRng::seed_from_u64(7);
    let crm = Connection::open(dir.join("crm.db"))?;
    crm.execute_batch(
        "CREATE TABLE contacts (id INTEGER PRIMARY KEY, email TEXT NOT NULL, name TEXT, status TEXT, phone TEXT,
           street TEXT, city TEXT, zip TEXT, notes TEXT, updated_at INTEGER NOT NULL DEFAULT (unixepoch()));",
    )?;
    let billing = Connection::open(dir.join("billing.db"))?;
    billing.execute_batch(
        "CREATE TABLE customers (customer_id INTEGER PRIMARY KEY, email_address TEXT NOT NULL, full_name TEXT,
           status TEXT NOT NULL DEFAULT 'trial' CHECK (status IN ('trial', 'active', 'past_due', 'cancelled')),
           phone TEXT, street TEXT, city TEXT, zip TEXT, notes TEXT, modified_at INTEGER NOT NULL DEFAULT (unixepoch()), crm_id TEXT);",
    )?;
    let overlap = contacts * 6 / 10;
    {
        let tx = crm.unchecked_transaction()?;
        let tb = billing.unchecked_transaction()?;
        for i in 1..=contacts {
            let name = format!(
                "{} {}",
                FIRST[i % FIRST.len()],
                LAST[(i / FIRST.len()) % LAST.len()]
            );
            let email = format!(
                "{}.{}{i}@example.com",
                FIRST[i % FIRST.len()].to_lowercase(),
                LAST[(i / FIRST.len()) % LAST.len()].to_lowercase()
            );
            let (city, zip) = CITIES[i % CITIES.len()];
            let phone = format!("+49 30 {:07}", rng.random_range(0..10_000_000));
            tx.execute(
                "INSERT INTO contacts (id, email, name, status, phone, street, city, zip, notes, updated_at) VALUES (?1, ?2, ?3, NULL, ?4, ?5, ?6, ?7, NULL, ?8)",
                params![i as i64, email, name, phone, format!("{} Main St", i), city, zip, now - 86_400],
            )?;
            if i <= overlap {
                // Billing knows this customer too; some were typed in with other casing.
                let billing_email = if i % 50 == 0 {
                    email.to_uppercase()
                } else {
                    email.clone()
                };
                let status = ["active", "trial", "past_due"][i % 3];
                tb.execute(
                    "INSERT INTO customers (email_address, full_name, status, phone, street, city, zip, notes, modified_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, ?8)",
                    params![billing_email, name, status, phone, format!("{} Main St", i), city, zip, now - 86_400],
                )?;
            }
        }
        // Billing-only customers, which the CRM will learn about.
        for j in 0..contacts / 20 {
            tb.execute(
                "INSERT INTO customers (email_address, full_name, status, phone, modified_at) VALUES (?1, ?2, 'trial', NULL, ?3)",
                params![format!("billing.only{j}@example.org"), format!("Billing Only {j}"), now - 3600],
            )?;
        }
        // A duplicate: two billing customers claim the same CRM email. syncline will not guess.
        tb.execute(
            "INSERT INTO customers (email_address, full_name, status, modified_at) VALUES (?1, 'Duplicate Entry', 'trial', ?2)",
            params![format!("{}.{}{}@example.com", FIRST[7 % FIRST.len()].to_lowercase(), LAST[(7 / FIRST.len()) % LAST.len()].to_lowercase(), 7), now],
        )?;
        tx.commit()?;
        tb.commit()?;
    }
    std::fs::write(dir.join("syncline.toml"), CONFIG)?;
    std::fs::write(
        dir.join(MARKER),
        "created by `syncline demo`; safe to delete\n",
    )?;

    let out = Output { json };
    let config = Config::load(&dir.join("syncline.toml"))?;
    say(
        json,
        &format!(
            "created {}: crm.db ({contacts} contacts), billing.db ({} customers), syncline.toml\n",
            dir.display(),
            overlap + contacts / 20 + 1
        ),
    );

    say(json, "== syncline plan (first look; writes nothing)");
    let mut ro = StateStore::for_config(&config.state, true)?;
    let plan = engine::run_cycle(
        &config,
        &mut ro,
        RunOptions {
            apply: false,
            list_limit: 8,
            ..Default::default()
        },
    )?;
    out.report(&plan, true);
    drop(ro);

    say(
        json,
        "\n== syncline run (first link: match by email, create what is missing, write back status)",
    );
    let mut state = StateStore::for_config(&config.state, false)?;
    let first = engine::run_cycle(
        &config,
        &mut state,
        RunOptions {
            list_limit: 5,
            ..Default::default()
        },
    )?;
    out.report(&first, false);

    // A day of edits on both sides.
    crm.execute(
        "UPDATE contacts SET name = 'Ada King', updated_at = ?1 WHERE id = 1",
        [now],
    )?;
    crm.execute(
        "UPDATE contacts SET notes = 'VIP: call before invoicing', updated_at = ?1 WHERE id = 2",
        [now],
    )?;
    billing.execute("UPDATE customers SET notes = 'disputed invoice #88' WHERE crm_id IS NULL AND customer_id = 2", [])?;
    billing.execute(
        "UPDATE customers SET status = 'cancelled', modified_at = ?1 WHERE customer_id = 3",
        [now],
    )?;
    crm.execute(
        "UPDATE contacts SET phone = '+49 30 1111111', updated_at = ?1 WHERE id = 4",
        [now - 600],
    )?;
    billing.execute(
        "UPDATE customers SET phone = '+49 30 2222222', modified_at = ?1 WHERE customer_id = 4",
        [now],
    )?;
    billing.execute("UPDATE customers SET street = '1 New Road', city = 'Oslo', zip = '0150', modified_at = ?1 WHERE customer_id = 5", [now])?;
    say(
        json,
        "\n== edits: CRM renames contact 1 and notes contact 2; billing notes customer 2 too (conflict),\n   cancels 3, both edit the phone of 4 (newest wins), billing moves customer 5",
    );
    say(json, "\n== syncline run (second cycle)");
    let second = engine::run_cycle(
        &config,
        &mut state,
        RunOptions {
            list_limit: 10,
            ..Default::default()
        },
    )?;
    out.report(&second, false);
    let third = engine::run_cycle(
        &config,
        &mut state,
        RunOptions {
            list_limit: 5,
            ..Default::default()
        },
    )?;
    let quiet = third
        .links
        .iter()
        .all(|l| l.to_left.writes() + l.to_right.writes() == 0);
    say(
        json,
        &format!(
            "\n== a third run right after writes {} (quiescence)",
            if quiet {
                "nothing"
            } else {
                "something — this is a bug"
            }
        ),
    );
    say(
        json,
        &format!(
            "\nnext, from {}:\n  syncline conflicts list          # the notes conflict, held for you\n  syncline quarantine list         # the duplicate email, not guessed\n  syncline explain contacts left:1 # where each value of contact 1 came from\n  syncline log --link contacts --limit 20",
            dir.display()
        ),
    );
    // The demo succeeds when it showed what it set out to: the conflict and the
    // duplicate wait for a person on purpose, so they are no failure of the demo; a third
    // run that wrote something would be.
    if !quiet {
        bail!("the third run wrote something after a run with nobody editing: a bug in syncline");
    }
    Ok(super::EXIT_OK)
}

fn say(json: bool, text: &str) {
    if !json {
        println!("{text}");
    }
}

fn prepare_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        let ours = dir.join(MARKER).exists();
        let empty = std::fs::read_dir(dir)?.next().is_none();
        if !ours && !empty {
            bail!(
                "{} exists and was not made by `syncline demo`; pick another --dir",
                dir.display()
            );
        }
        for f in ["crm.db", "billing.db", "syncline.toml", MARKER] {
            let _ = std::fs::remove_file(dir.join(f));
        }
        let _ = std::fs::remove_dir_all(dir.join(".syncline"));
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(())
}
