//! `csv` and `jsonl`: a folder of files, one file per collection (`contacts` is
//! `DIR/contacts.csv` or `DIR/contacts.jsonl`).
//!
//! Reads stream the file (memory bounded by a batch, whatever the file's size). A batch
//! of writes rewrites the file: the old one is streamed through into a new file beside
//! it, with each update and delete checked against the row as it is now (a write to a
//! row that changed since it was read is stale, as in SQL), creates appended; the new
//! file is flushed and fsynced, then renamed over the old one and the folder fsynced —
//! a crash leaves the old file or the new one, never half of one. A file another program
//! replaced or edited while syncline wrote it (its size, modification time or inode
//! moved) is not clobbered: the rewrite starts again from what it holds now. Columns,
//! their order, unknown columns (JSON keys) and lines syncline cannot read are kept
//! through a rewrite. A file has no types: a CSV cell is text and a JSON value what JSON
//! says, unless the system declares a column's type (`types`), so values compare by
//! meaning with the other side.
//!
//! What a file cannot give, it says in its capabilities: its rows are in no key order,
//! and it cannot assign keys (a create must carry its key).

mod settings;
mod types;

pub use settings::{CsvSettings, JsonlSettings};
pub use types::ColumnType;

use super::{
    BatchResult, Capabilities, ColumnInfo, Conditional, Connector, ConnectorError, ReadSpec, Write,
    WriteOutcome,
};
use crate::model::{Key, Record, Value};
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, BufWriter, Write as _};
use std::path::{Path, PathBuf};

/// How rows are written in a file.
#[derive(Debug, Clone, PartialEq)]
pub enum Format {
    Csv(Dialect),
    Jsonl,
}

/// A CSV dialect.
#[derive(Debug, Clone, PartialEq)]
pub struct Dialect {
    pub delimiter: u8,
    pub quote: u8,
    /// The first line names the columns.
    pub header: bool,
    /// A new file starts with a UTF-8 byte order mark (a file that has one keeps it).
    pub bom: bool,
    pub crlf: bool,
}

/// What a file system is: its folder, format and declared types.
#[derive(Debug, Clone)]
pub struct FileSettings {
    pub dir: PathBuf,
    pub format: Format,
    /// Declared types, by `column` or `collection.column`.
    pub types: HashMap<String, ColumnType>,
    /// Per collection: its columns when the file has no header, or does not exist yet.
    pub columns: HashMap<String, Vec<String>>,
}

/// A row as a file holds it.
enum Row {
    /// A CSV line's cells (aligned to the header where it has as many).
    Cells(Vec<String>),
    /// A JSON Lines object.
    Object(serde_json::Map<String, serde_json::Value>),
    /// A line that could not be read as a row (its fields as bytes: a CSV line's, or a
    /// JSON line whole), and why: kept as it is through a rewrite.
    Unreadable { fields: Vec<Vec<u8>>, why: String },
}

/// One line of a file as read: where it is, and the row.
struct Line {
    number: u64,
    row: Row,
}

/// What a read calls with the file's columns and each line.
type LineVisitor<'a> = dyn FnMut(&[String], Line) -> Result<(), ConnectorError> + 'a;

pub struct FileConnector {
    name: String,
    settings: FileSettings,
}

const BOM: &str = "\u{feff}";

impl FileConnector {
    /// # Errors
    /// The folder does not exist.
    pub fn open(name: &str, settings: &FileSettings) -> Result<FileConnector, ConnectorError> {
        if !settings.dir.is_dir() {
            return Err(ConnectorError::Open {
                target: format!("system `{name}` ({})", settings.dir.display()),
                source: "no such folder".into(),
            });
        }
        Ok(FileConnector {
            name: name.to_string(),
            settings: settings.clone(),
        })
    }

    fn kind(&self) -> &'static str {
        match self.settings.format {
            Format::Csv(_) => "csv",
            Format::Jsonl => "jsonl",
        }
    }

    /// The file of `collection`: its name, with the format's extension unless it has one.
    fn path(&self, collection: &str) -> PathBuf {
        let ext = self.kind();
        let file = if Path::new(collection).extension().is_some() {
            collection.to_string()
        } else {
            format!("{collection}.{ext}")
        };
        self.settings.dir.join(file)
    }

    fn declared(&self, collection: &str, column: &str) -> Option<&ColumnType> {
        self.settings
            .types
            .get(&format!("{collection}.{column}"))
            .or_else(|| self.settings.types.get(column))
    }

    fn io_err(&self, what: &str, path: &Path, e: impl std::fmt::Display) -> ConnectorError {
        ConnectorError::Query {
            context: format!("{} `{}`: {what} {}", self.kind(), self.name, path.display()),
            source: e.to_string().into(),
        }
    }

    /// Streams the file of `collection`: its columns first (the header, or the
    /// configured ones; for JSON Lines the configured ones, if any), then each line.
    /// A file that does not exist has no lines.
    fn read(
        &self,
        collection: &str,
        each: &mut LineVisitor<'_>,
    ) -> Result<Vec<String>, ConnectorError> {
        let path = self.path(collection);
        let configured = self.settings.columns.get(collection).cloned();
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return configured.ok_or_else(|| {
                    ConnectorError::NoCollection(format!(
                        "{}.{collection} (no file {}; create it with a header line, or declare its columns: columns = {{ {collection} = [\"id\", …] }})",
                        self.name,
                        path.display()
                    ))
                });
            }
            Err(e) => return Err(self.io_err("open", &path, e)),
        };
        match &self.settings.format {
            Format::Csv(d) => {
                let mut reader = csv::ReaderBuilder::new()
                    .delimiter(d.delimiter)
                    .quote(d.quote)
                    .has_headers(false)
                    .flexible(true)
                    .from_reader(BufReader::new(file));
                let mut columns = configured.filter(|_| !d.header);
                let mut record = csv::ByteRecord::new();
                let mut first = true;
                loop {
                    match reader.read_byte_record(&mut record) {
                        Ok(false) => break,
                        Ok(true) => {
                            let number = record.position().map_or(0, csv::Position::line);
                            let cells: Result<Vec<String>, _> = record
                                .iter()
                                .map(|f| String::from_utf8(f.to_vec()))
                                .collect();
                            let row = match cells {
                                Ok(mut cells) => {
                                    if first && let Some(c) = cells.first_mut() {
                                        *c = c.trim_start_matches(BOM).to_string();
                                    }
                                    Row::Cells(cells)
                                }
                                Err(_) => Row::Unreadable {
                                    fields: record.iter().map(<[u8]>::to_vec).collect(),
                                    why: "it is not UTF-8".into(),
                                },
                            };
                            first = false;
                            let Some(cols) = &columns else {
                                match row {
                                    Row::Cells(cells) => columns = Some(cells),
                                    _ => {
                                        return Err(self.io_err(
                                            "read the header of",
                                            &path,
                                            "it is not UTF-8",
                                        ));
                                    }
                                }
                                continue;
                            };
                            each(cols, Line { number, row })?;
                        }
                        Err(e) => return Err(self.io_err("read", &path, e)),
                    }
                }
                Ok(columns.unwrap_or_default())
            }
            Format::Jsonl => {
                let columns = configured.unwrap_or_default();
                let mut reader = BufReader::new(file);
                let mut line = Vec::new();
                let mut number = 0;
                loop {
                    line.clear();
                    let read = reader
                        .read_until(b'\n', &mut line)
                        .map_err(|e| self.io_err("read", &path, e))?;
                    if read == 0 {
                        break;
                    }
                    number += 1;
                    let mut bytes = line.as_slice();
                    while let [rest @ .., b'\n' | b'\r'] = bytes {
                        bytes = rest;
                    }
                    if number == 1 {
                        bytes = bytes.strip_prefix(BOM.as_bytes()).unwrap_or(bytes);
                    }
                    if bytes.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let row = match serde_json::from_slice::<serde_json::Value>(bytes) {
                        Ok(serde_json::Value::Object(map)) => Row::Object(map),
                        Ok(_) => Row::Unreadable {
                            fields: vec![bytes.to_vec()],
                            why: "it is not a JSON object".into(),
                        },
                        Err(e) => Row::Unreadable {
                            fields: vec![bytes.to_vec()],
                            why: e.to_string(),
                        },
                    };
                    each(&columns, Line { number, row })?;
                }
                Ok(columns)
            }
        }
    }

    /// A line as a record of `spec`; a line that cannot be one is a record with a
    /// defect naming its line (and its key where that could be read).
    fn record(&self, spec: &ReadSpec, columns: &[String], line: &Line) -> Record {
        let number = line.number;
        let mut defect: Option<String> = None;
        let mut value = |column: &str| -> Value {
            let declared = self.declared(&spec.collection, column);
            let read = match &line.row {
                Row::Cells(cells) => match columns.iter().position(|c| c == column) {
                    Some(i) => match cells.get(i) {
                        Some(cell) if cell.is_empty() => Ok(Value::Null),
                        Some(cell) => declared.unwrap_or(&ColumnType::Text).read_text(cell),
                        None => Ok(Value::Null),
                    },
                    None => Ok(Value::Null),
                },
                Row::Object(map) => match map.get(column) {
                    Some(json) => ColumnType::read_json(declared, json),
                    None => Ok(Value::Null),
                },
                Row::Unreadable { .. } => Ok(Value::Null),
            };
            read.unwrap_or_else(|why| {
                defect.get_or_insert(format!("line {number}, column `{column}`: {why}"));
                Value::Null
            })
        };
        let key: Vec<Value> = spec.key.iter().map(|k| value(k)).collect();
        let values: Vec<Value> = spec.columns.iter().map(|c| value(c)).collect();
        match &line.row {
            Row::Unreadable { why, .. } => {
                defect = Some(format!("line {number} cannot be read: {why}"));
            }
            Row::Cells(cells) if cells.len() != columns.len() => {
                defect.get_or_insert(format!(
                    "line {number} has {} fields, the header {}",
                    cells.len(),
                    columns.len()
                ));
            }
            _ => {}
        }
        let key = if key.contains(&Value::Null) {
            defect.get_or_insert(format!("line {number} has no key"));
            Key(vec![Value::Text(format!("line {number}"))])
        } else {
            Key(key)
        };
        let mut record = Record::new(key, values);
        record.defect = defect;
        record
    }

    /// Streams `spec`'s records; a key that repeats is the later line's defect.
    fn records(
        &self,
        spec: &ReadSpec,
        each: &mut dyn FnMut(Record) -> Result<(), ConnectorError>,
    ) -> Result<(), ConnectorError> {
        // 8 bytes a key (a 64-bit fingerprint), the one thing a read keeps per row: a
        // map to the first line's number doubled a 1M-row read's peak memory growth.
        let mut seen: HashSet<u64> = HashSet::new();
        self.read(&spec.collection, &mut |columns, line| {
            let mut record = self.record(spec, columns, &line);
            if record.defect.is_none() {
                let fingerprint = xxhash_rust::xxh3::xxh3_64(record.key.encode().as_bytes());
                if !seen.insert(fingerprint) {
                    record.defect = Some(format!(
                        "line {}: key {} repeats one an earlier line holds",
                        line.number, record.key
                    ));
                }
            }
            each(record)
        })?;
        Ok(())
    }

    fn in_spec(spec: &ReadSpec, record: &Record) -> bool {
        let key = record.key.encode();
        let in_range = spec.range.as_ref().is_none_or(|r| {
            r.from.as_ref().is_none_or(|f| key >= f.encode())
                && r.to.as_ref().is_none_or(|t| key < t.encode())
        });
        let at_or_past = spec.since.as_ref().is_none_or(|s| {
            spec.columns
                .iter()
                .position(|c| *c == s.column)
                .and_then(|i| record.values[i].cursor_cmp(&s.value))
                .is_some_and(|o| o.is_ge())
        });
        in_range && (record.defect.is_some() || at_or_past)
    }
}

impl Connector for FileConnector {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            ordered_scan: false,
            // One open file is read: another program's rewrite by rename does not
            // change what this read sees.
            snapshot: true,
            atomic_batch: true,
            conditional: Conditional::Values,
            read_back: true,
            change_feed: false,
        }
    }

    fn identity(&mut self) -> Result<String, ConnectorError> {
        let dir = self
            .settings
            .dir
            .canonicalize()
            .unwrap_or_else(|_| self.settings.dir.clone());
        Ok(format!("{}:{}", self.kind(), dir.display()))
    }

    fn describe(&mut self, collection: &str) -> Result<Vec<ColumnInfo>, ConnectorError> {
        let mut columns = match self.settings.format {
            Format::Csv(_) => self.read_header(collection)?,
            Format::Jsonl => {
                // Every key any line has, in the order first seen.
                let mut names = Vec::new();
                let mut known = HashSet::new();
                let configured = self.read(collection, &mut |_, line| {
                    if let Row::Object(map) = &line.row {
                        for k in map.keys() {
                            if known.insert(k.clone()) {
                                names.push(k.clone());
                            }
                        }
                    }
                    Ok(())
                })?;
                for c in configured {
                    if known.insert(c.clone()) {
                        names.push(c);
                    }
                }
                names
            }
        };
        columns.dedup();
        Ok(columns
            .into_iter()
            .map(|name| ColumnInfo {
                declared_type: self
                    .declared(collection, &name)
                    .map_or_else(|| "text".into(), ColumnType::name),
                name,
                not_null: false,
                primary_key: false,
                unique: false,
                has_default: false,
            })
            .collect())
    }

    fn scan(
        &mut self,
        spec: &ReadSpec,
        batch_size: usize,
        consumer: &mut dyn FnMut(Vec<Record>) -> Result<(), crate::Error>,
    ) -> Result<u64, ConnectorError> {
        let mut batches = super::ScanBatches::new(batch_size, consumer);
        self.records(spec, &mut |record| {
            if Self::in_spec(spec, &record) {
                batches.push(record)?;
            }
            Ok(())
        })?;
        batches.finish()
    }

    fn is_empty(&mut self, spec: &ReadSpec) -> Result<bool, ConnectorError> {
        Ok(self.count(spec)? == Some(0))
    }

    fn count(&mut self, spec: &ReadSpec) -> Result<Option<u64>, ConnectorError> {
        let mut n = 0;
        match self.read(&spec.collection, &mut |_, _| {
            n += 1;
            Ok(())
        }) {
            Ok(_) => Ok(Some(n)),
            Err(ConnectorError::NoCollection(_)) => Ok(Some(0)),
            Err(e) => Err(e),
        }
    }

    fn fetch(&mut self, spec: &ReadSpec, keys: &[Key]) -> Result<Vec<Record>, ConnectorError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let wanted: HashSet<String> = keys.iter().map(Key::encode).collect();
        let mut found = Vec::new();
        self.records(spec, &mut |record| {
            if wanted.contains(&record.key.encode()) {
                found.push(record);
            }
            Ok(())
        })?;
        Ok(found)
    }

    fn apply(&mut self, spec: &ReadSpec, writes: &[Write]) -> Result<BatchResult, ConnectorError> {
        // Another program's rewrite during ours starts ours again from what it holds.
        let mut attempt = 0;
        loop {
            match self.rewrite(spec, writes)? {
                Some(result) => return Ok(result),
                None if attempt < 3 => attempt += 1,
                None => {
                    return Err(ConnectorError::Query {
                        context: format!(
                            "{} `{}`: write {}",
                            self.kind(),
                            self.name,
                            self.path(&spec.collection).display()
                        ),
                        source:
                            "the file kept changing while syncline wrote it; nothing was written"
                                .into(),
                    });
                }
            }
        }
    }
}

/// What identifies a file's contents between a read and a rename.
#[derive(PartialEq)]
struct Stamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        len: m.len(),
        modified: m.modified().ok(),
        inode: m.ino(),
    })
}

impl FileConnector {
    /// The header of a CSV file (or its configured columns).
    fn read_header(&self, collection: &str) -> Result<Vec<String>, ConnectorError> {
        let Format::Csv(d) = &self.settings.format else {
            return Ok(Vec::new());
        };
        if !d.header || !self.path(collection).exists() {
            return self.read(collection, &mut |_, _| Ok(()));
        }
        let file = std::fs::File::open(self.path(collection))
            .map_err(|e| self.io_err("open", &self.path(collection), e))?;
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(d.delimiter)
            .quote(d.quote)
            .has_headers(false)
            .flexible(true)
            .from_reader(BufReader::new(file));
        let mut record = csv::StringRecord::new();
        let read = reader
            .read_record(&mut record)
            .map_err(|e| self.io_err("read the header of", &self.path(collection), e))?;
        if !read {
            return self.settings.columns.get(collection).cloned().ok_or_else(|| {
                ConnectorError::NoCollection(format!(
                    "{}.{collection} (the file is empty: give it a header line, or declare its columns)",
                    self.name
                ))
            });
        }
        Ok(record
            .iter()
            .enumerate()
            .map(|(i, c)| if i == 0 { c.trim_start_matches(BOM) } else { c }.to_string())
            .collect())
    }

    /// One rewrite of the file with `writes` applied; `None` when another program
    /// changed the file meanwhile (nothing was written).
    fn rewrite(
        &self,
        spec: &ReadSpec,
        writes: &[Write],
    ) -> Result<Option<BatchResult>, ConnectorError> {
        let path = self.path(&spec.collection);
        let before = stamp(&path);
        // Its first three bytes, not the file: a rewrite holds one row at a time.
        let had_bom = std::fs::File::open(&path)
            .and_then(|mut f| {
                use std::io::Read;
                let mut head = [0u8; 3];
                f.read_exact(&mut head).map(|()| head)
            })
            .is_ok_and(|head| head == *BOM.as_bytes());
        // Updates and deletes by key; creates by key, to refuse one whose key is taken.
        let mut by_key: HashMap<String, usize> = HashMap::new();
        let mut creates: HashMap<String, usize> = HashMap::new();
        let mut outcomes: Vec<Option<WriteOutcome>> = vec![None; writes.len()];
        let mut stored: Vec<Option<Record>> = vec![None; writes.len()];
        for (i, w) in writes.iter().enumerate() {
            match w {
                Write::Update { key, .. } | Write::Delete { key, .. } => {
                    by_key.insert(key.encode(), i);
                }
                Write::Create { values } => {
                    let key: Option<Vec<Value>> = spec
                        .key
                        .iter()
                        .map(|k| {
                            values
                                .iter()
                                .find(|(c, _)| **c == **k)
                                .map(|(_, v)| v.clone())
                                .filter(|v| *v != Value::Null)
                        })
                        .collect();
                    match key {
                        Some(key) => {
                            creates.insert(Key(key).encode(), i);
                        }
                        None => {
                            outcomes[i] = Some(WriteOutcome::Rejected(format!(
                                "a {} file cannot assign keys: the record must carry its key ({})",
                                self.kind(),
                                spec.key.join(", ")
                            )));
                        }
                    }
                }
            }
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        // Named after the file, so one a crash leaves behind says whose it was.
        let file_name = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let mut temp = tempfile::Builder::new()
            .prefix(&format!(".{file_name}.syncline-"))
            .tempfile_in(dir)
            .map_err(|e| self.io_err("write beside", &path, e))?;
        let mut out = BufWriter::new(temp.as_file_mut());
        let mut columns: Option<Vec<String>> = None;
        let mut writer = RowWriter::new(&self.settings.format);
        let io = |e: std::io::Error| self.io_err("write", &path, e);
        let exists = path.exists();
        if (had_bom || (!exists && matches!(&self.settings.format, Format::Csv(d) if d.bom)))
            && matches!(self.settings.format, Format::Csv(_))
        {
            out.write_all(BOM.as_bytes()).map_err(io)?;
        }
        let mut started = false;
        let start = |out: &mut BufWriter<&mut std::fs::File>,
                     file_columns: &[String],
                     writer: &mut RowWriter|
         -> Result<Vec<String>, ConnectorError> {
            // The file's columns, and any the link writes that it lacks, after them.
            let mut cols = file_columns.to_vec();
            for c in spec.key.iter().chain(&spec.columns) {
                if !cols.contains(c) {
                    cols.push(c.clone());
                }
            }
            if let Format::Csv(d) = &self.settings.format
                && d.header
            {
                writer.cells(out, &cols).map_err(io)?;
            }
            Ok(cols)
        };
        let read_columns = self.read(&spec.collection, &mut |file_columns, line| {
            if !started {
                columns = Some(start(&mut out, file_columns, &mut writer)?);
                started = true;
            }
            let cols = columns.as_ref().expect("started");
            let record = self.record(spec, file_columns, &line);
            let encoded = record.key.encode();
            if record.defect.is_none() {
                if let Some(&i) = creates.get(&encoded) {
                    outcomes[i] = Some(WriteOutcome::Rejected(format!(
                        "key {} exists in the file",
                        record.key
                    )));
                }
                if let Some(&i) = by_key.get(&encoded)
                    && outcomes[i].is_none()
                {
                    let (expect, set) = match &writes[i] {
                        Write::Update { expect, set, .. } => (expect, Some(set)),
                        Write::Delete { expect, .. } => (expect, None),
                        Write::Create { .. } => unreachable!("creates are not by key"),
                    };
                    // Against the row as just read (the record above), by column.
                    let holds = expect.iter().all(|(c, v)| {
                        let held = spec
                            .columns
                            .iter()
                            .position(|x| **x == **c)
                            .map(|i| &record.values[i])
                            .or_else(|| {
                                spec.key
                                    .iter()
                                    .position(|x| **x == **c)
                                    .map(|i| &record.key.0[i])
                            });
                        held.is_some_and(|h| h.same_meaning(v) || h == v)
                    });
                    if !holds {
                        outcomes[i] = Some(WriteOutcome::Stale);
                    } else if let Some(set) = set {
                        let row = set_row(line.row, file_columns, cols, set);
                        let line = Line {
                            number: line.number,
                            row,
                        };
                        stored[i] = Some(self.record(spec, cols, &line));
                        outcomes[i] = Some(WriteOutcome::Applied);
                        return writer
                            .row(&mut out, line.row, file_columns, cols)
                            .map_err(io);
                    } else {
                        outcomes[i] = Some(WriteOutcome::Applied);
                        return Ok(());
                    }
                }
            }
            writer
                .row(&mut out, line.row, file_columns, cols)
                .map_err(io)
        });
        let file_columns = match read_columns {
            Ok(c) => c,
            Err(ConnectorError::NoCollection(_)) if !exists => Vec::new(),
            Err(e) => return Err(e),
        };
        if !started {
            columns = Some(start(&mut out, &file_columns, &mut writer)?);
        }
        let cols = columns.expect("started");
        for (i, w) in writes.iter().enumerate() {
            match w {
                Write::Create { values } if outcomes[i].is_none() => {
                    let empty = match self.settings.format {
                        Format::Csv(_) => Row::Cells(Vec::new()),
                        Format::Jsonl => Row::Object(serde_json::Map::new()),
                    };
                    let row = set_row(empty, &[], &cols, values);
                    let line = Line { number: 0, row };
                    let record = self.record(spec, &cols, &line);
                    outcomes[i] = Some(WriteOutcome::Created(record.key.clone()));
                    stored[i] = Some(record);
                    writer.row(&mut out, line.row, &cols, &cols).map_err(io)?;
                }
                // An update or delete whose row is gone: stale, as a vanished SQL row.
                _ if outcomes[i].is_none() => outcomes[i] = Some(WriteOutcome::Stale),
                _ => {}
            }
        }
        out.flush().map_err(io)?;
        drop(out);
        temp.as_file().sync_all().map_err(io)?;
        // Written beside the old file, not yet in its place: the batch is half-way.
        crate::fault::point("mid_batch");
        // A save by another program from here to the rename is not seen: a window of
        // two system calls, which only a lock every writer takes could close.
        if stamp(&path) != before {
            return Ok(None);
        }
        temp.persist(&path)
            .map_err(|e| self.io_err("replace", &path, e.error))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| self.io_err("sync the folder of", &path, e))?;
        let outcomes = outcomes
            .into_iter()
            .map(|o| o.expect("every write has an outcome"))
            .collect();
        Ok(Some(BatchResult { outcomes, stored }))
    }
}

/// `row` (read under `file_columns`) with `set` written, as a row of `columns`.
fn set_row(
    row: Row,
    file_columns: &[String],
    columns: &[String],
    set: &[(crate::model::Name, Value)],
) -> Row {
    match row {
        Row::Cells(cells) => {
            let mut out: Vec<String> = columns
                .iter()
                .map(|c| {
                    file_columns
                        .iter()
                        .position(|f| f == c)
                        .and_then(|i| cells.get(i).cloned())
                        .unwrap_or_default()
                })
                .collect();
            for (c, v) in set {
                if let Some(i) = columns.iter().position(|x| **x == **c) {
                    out[i] = types::write_cell(v);
                }
            }
            Row::Cells(out)
        }
        Row::Object(mut map) => {
            for (c, v) in set {
                map.insert(c.to_string(), ColumnType::write_json(v));
            }
            Row::Object(map)
        }
        unreadable @ Row::Unreadable { .. } => unreadable,
    }
}

/// Writes rows in the file's format.
struct RowWriter {
    format: Format,
}

impl RowWriter {
    fn new(format: &Format) -> RowWriter {
        RowWriter {
            format: format.clone(),
        }
    }

    fn cells(&mut self, out: &mut impl std::io::Write, cells: &[String]) -> std::io::Result<()> {
        let Format::Csv(d) = &self.format else {
            return Ok(());
        };
        let mut w = csv::WriterBuilder::new()
            .delimiter(d.delimiter)
            .quote(d.quote)
            .terminator(if d.crlf {
                csv::Terminator::CRLF
            } else {
                csv::Terminator::Any(b'\n')
            })
            .from_writer(Vec::new());
        w.write_record(cells).map_err(std::io::Error::other)?;
        let bytes = w
            .into_inner()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        out.write_all(&bytes)
    }

    /// A row read under `file_columns`, written under `columns` (which extend them).
    fn row(
        &mut self,
        out: &mut impl std::io::Write,
        row: Row,
        file_columns: &[String],
        columns: &[String],
    ) -> std::io::Result<()> {
        match row {
            Row::Cells(cells) => {
                let mut cells = cells;
                if cells.len() == file_columns.len() && columns.len() > file_columns.len() {
                    cells.resize(columns.len(), String::new());
                }
                self.cells(out, &cells)
            }
            Row::Object(map) => {
                serde_json::to_writer(&mut *out, &map).map_err(std::io::Error::other)?;
                out.write_all(b"\n")
            }
            Row::Unreadable { fields, .. } => match &self.format {
                Format::Csv(d) => {
                    let mut w = csv::WriterBuilder::new()
                        .delimiter(d.delimiter)
                        .quote(d.quote)
                        .terminator(if d.crlf {
                            csv::Terminator::CRLF
                        } else {
                            csv::Terminator::Any(b'\n')
                        })
                        .from_writer(Vec::new());
                    w.write_byte_record(&csv::ByteRecord::from(fields))
                        .map_err(std::io::Error::other)?;
                    let bytes = w
                        .into_inner()
                        .map_err(|e| std::io::Error::other(e.to_string()))?;
                    out.write_all(&bytes)
                }
                Format::Jsonl => {
                    for f in fields {
                        out.write_all(&f)?;
                    }
                    out.write_all(b"\n")
                }
            },
        }
    }
}
