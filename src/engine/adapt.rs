//! A system that promises less than SQL's contract, made to keep the engine's: writes
//! conditional on what was read (re-read just before writing where the system has no
//! conditional writes), each write's outcome known (an unknown one resolved by a fetch;
//! a batch that failed part-way resolved write by write), and what was stored read back
//! (fetched after the batch where the system does not return it). What no adapter can
//! give — a snapshot — the planner handles: a record missing from a listing is confirmed
//! gone by a fetch before any delete rule sees it (see `plan`).

use crate::connectors::{
    BatchResult, Capabilities, Conditional, Connector, ConnectorError, ReadSpec, Write,
    WriteOutcome,
};
use crate::model::{Key, Name, Record, Value};
use std::collections::HashMap;

/// `inner`, adapted where its capabilities fall short of the engine's contract.
pub fn wrap(inner: Box<dyn Connector>) -> Box<dyn Connector> {
    let caps = inner.capabilities();
    if caps.conditional == Conditional::Values && caps.read_back && caps.atomic_batch {
        return inner;
    }
    Box::new(Adapted { inner, caps })
}

struct Adapted {
    inner: Box<dyn Connector>,
    caps: Capabilities,
}

/// Whether `record` (read by `spec`) holds each column's value by `same` (a column the
/// spec does not read is no evidence against).
fn holds(
    spec: &ReadSpec,
    record: &Record,
    columns: &[(Name, Value)],
    same: fn(&Value, &Value) -> bool,
) -> bool {
    columns.iter().all(|(c, v)| {
        spec.columns
            .iter()
            .position(|col| **col == **c)
            .is_none_or(|i| same(&record.values[i], v))
    })
}

fn key_of(w: &Write) -> Option<&Key> {
    match w {
        Write::Create { .. } => None,
        Write::Update { key, .. } | Write::Delete { key, .. } => Some(key),
    }
}

impl Adapted {
    /// The records with these keys, by encoded key.
    fn fetch_map(
        &mut self,
        spec: &ReadSpec,
        keys: Vec<Key>,
    ) -> Result<HashMap<String, Record>, ConnectorError> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        Ok(self
            .inner
            .fetch(spec, &keys)?
            .into_iter()
            .map(|r| (r.key.encode(), r))
            .collect())
    }
}

impl Connector for Adapted {
    fn capabilities(&self) -> Capabilities {
        self.caps
    }

    crate::connectors::forward_to_inner!(
        identity,
        describe,
        scan,
        is_empty,
        count,
        fetch,
        changes,
        digests,
        feed_changes,
        confirm_feed,
        feed_retained,
        mark_own_writes
    );

    fn apply(&mut self, spec: &ReadSpec, writes: &[Write]) -> Result<BatchResult, ConnectorError> {
        let mut outcomes: Vec<Option<WriteOutcome>> = vec![None; writes.len()];
        // Without conditional writes: re-read now, and skip what changed since it was read.
        if self.caps.conditional == Conditional::None {
            let now = self.fetch_map(spec, writes.iter().filter_map(key_of).cloned().collect())?;
            for (i, w) in writes.iter().enumerate() {
                let (Write::Update { key, expect, .. } | Write::Delete { key, expect, .. }) = w
                else {
                    continue;
                };
                if !now
                    .get(&key.encode())
                    .is_some_and(|r| holds(spec, r, expect, Value::eq))
                {
                    outcomes[i] = Some(WriteOutcome::Stale);
                }
            }
        }
        let send: Vec<Write> = (0..writes.len())
            .filter(|&i| outcomes[i].is_none())
            .map(|i| writes[i].clone())
            .collect();
        let sent: Vec<(WriteOutcome, Option<Record>)> = match self.inner.apply(spec, &send) {
            Ok(result) => result.outcomes.into_iter().zip(result.stored).collect(),
            // Not atomic: part of the batch may be written. Each write's outcome is
            // unknown, and resolved below, unless the system cannot even be asked.
            Err(e) if !self.caps.atomic_batch && !matches!(e, ConnectorError::Lost { .. }) => {
                vec![(WriteOutcome::Unknown(e.to_string()), None); send.len()]
            }
            Err(e) => return Err(e),
        };
        let BatchResult {
            mut outcomes,
            mut stored,
        } = BatchResult::merged(outcomes, sent);
        // Unknown updates and deletes are resolved by what the system holds now; and what
        // was stored is read back where the system did not return it.
        let mut wanted = Vec::new();
        for (i, w) in writes.iter().enumerate() {
            // A delete that took effect has nothing to read back.
            let key = match (&outcomes[i], w) {
                (WriteOutcome::Created(k), _)
                | (WriteOutcome::Applied, Write::Update { key: k, .. })
                | (
                    WriteOutcome::Unknown(_),
                    Write::Update { key: k, .. } | Write::Delete { key: k, .. },
                ) => k,
                _ => continue,
            };
            if stored[i].is_none() {
                wanted.push(key.clone());
            }
        }
        let now = self.fetch_map(spec, wanted)?;
        for (i, w) in writes.iter().enumerate() {
            let found = |k: &Key| now.get(&k.encode()).cloned();
            match (&outcomes[i], w) {
                (WriteOutcome::Unknown(_), Write::Update { key, set, .. }) => {
                    let record = found(key);
                    let landed = record
                        .as_ref()
                        .is_some_and(|r| holds(spec, r, set, Value::same_meaning));
                    outcomes[i] = if landed {
                        stored[i] = record;
                        WriteOutcome::Applied
                    } else {
                        WriteOutcome::Stale
                    };
                }
                (WriteOutcome::Unknown(_), Write::Delete { key, .. }) => {
                    outcomes[i] = if found(key).is_none() {
                        WriteOutcome::Applied
                    } else {
                        WriteOutcome::Stale
                    };
                }
                (WriteOutcome::Created(k), _)
                | (WriteOutcome::Applied, Write::Update { key: k, .. })
                    if stored[i].is_none() =>
                {
                    stored[i] = found(k);
                }
                _ => {}
            }
        }
        Ok(BatchResult { outcomes, stored })
    }
}
