//! How a pair's base, per-side held values and bounce marks are encoded in the store.

use super::*;

/// Detects a value that does not stick: the side it was written to changed it back.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Mark {
    /// The side syncline last wrote this unit to.
    pub side: Side,
    /// Fingerprint of the value written (xxh3 of its encoding).
    pub hash: u64,
    /// Fingerprint of the value it replaced: a bounce is the same replacement again
    /// (a trigger rewriting our value the same way), not a person's new edit.
    #[serde(default)]
    pub replaced: u64,
    /// The link's run number of that write.
    pub run: i64,
    /// How many consecutive runs had to write the same value again.
    pub bounces: u32,
}

/// One linked pair: the id map entry and its base.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PairRow {
    pub left_key: String,
    pub right_key: String,
    /// Field name → last agreed value (normalized by the field's transform).
    pub base: BTreeMap<Name, Value>,
    /// Unit name → last write mark.
    pub marks: BTreeMap<String, Mark>,
    /// `Some(side)`: that side's record was deleted and the link says `ignore`: the pair
    /// is kept so the survivor is neither synced nor re-created.
    pub tombstone: Option<Side>,
    /// What each side holds where it is not exactly the base (see [`Held`]).
    pub held: Held,
}

/// Per side (`[left, right]`), field name → the value that side's system actually holds
/// for a field whose base it does not hold exactly: what a trigger, a default, a
/// rounding column or another representation made of the value syncline agreed on or
/// wrote. A side's base for a field is its entry here, or else the shared base. Empty for
/// almost every pair: only a system that rewrites what it is given fills it.
pub type Held = [BTreeMap<Name, Value>; 2];

/// A pair as [`StateStore::put_pairs`] stores it: base and marks already JSON-encoded,
/// so the encoding can happen where it costs least (a created record's base is encoded
/// on the writer's thread, see `engine::apply`).
pub struct EncodedPair {
    pub left_key: String,
    pub right_key: String,
    /// [`encode_base`]'s form.
    pub base: String,
    pub marks: Option<String>,
    pub tombstone: Option<Side>,
    /// [`encode_held`]'s form.
    pub held: Option<String>,
}

impl PairRow {
    pub fn encode(&self) -> EncodedPair {
        EncodedPair {
            left_key: self.left_key.clone(),
            right_key: self.right_key.clone(),
            base: encode_base(&self.base),
            marks: encode_marks(&self.marks),
            tombstone: self.tombstone,
            held: encode_held(&self.held),
        }
    }
}

/// Held values as the store keeps them: `{"left": {…}, "right": {…}}` of encoded values,
/// or NULL when neither side holds anything but the base.
pub(crate) fn encode_held(held: &Held) -> Option<String> {
    if held.iter().all(BTreeMap::is_empty) {
        return None;
    }
    Some(format!(
        "{{\"left\":{},\"right\":{}}}",
        encode_base(&held[0]),
        encode_base(&held[1])
    ))
}

/// Reads [`encode_held`]'s form in one pass (held values are rare: names are not shared
/// as a base's are).
pub(super) fn decode_held(text: &str) -> Result<Held> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sides {
        #[serde(default)]
        left: BTreeMap<Name, Value>,
        #[serde(default)]
        right: BTreeMap<Name, Value>,
    }
    let sides: Sides =
        serde_json::from_str(text).map_err(|e| StateError::Corrupt(format!("held values: {e}")))?;
    Ok([sides.left, sides.right])
}

/// Marks as the store keeps them: a JSON object of unit → mark, or NULL when none.
pub(crate) fn encode_marks(marks: &BTreeMap<String, Mark>) -> Option<String> {
    (!marks.is_empty()).then(|| serde_json::to_string(marks).expect("marks serialize"))
}

/// A base as the store keeps it: a JSON object of field name → encoded value.
pub(crate) fn encode_base(base: &BTreeMap<Name, Value>) -> String {
    write_base(base.iter().map(|(k, v)| (&**k, v)))
}

/// [`encode_base`]'s form of `fields` without building the map: the same object, its
/// names in the map's (byte) order.
pub(crate) fn encode_base_fields(mut fields: Vec<(&str, &Value)>) -> String {
    fields.sort_unstable_by(|a, b| a.0.cmp(b.0));
    fields.dedup_by(|later, first| later.0 == first.0);
    write_base(fields)
}

/// The JSON object of `fields` (in order), written directly: a base is written for
/// every record a run creates or changes, and serde's map machinery was most of that.
fn write_base<'a>(fields: impl IntoIterator<Item = (&'a str, &'a Value)>) -> String {
    let mut out = String::with_capacity(192);
    out.push('{');
    for (i, (name, value)) in fields.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_string(&mut out, |out| out.push_str(name));
        out.push(':');
        push_json_string(&mut out, |out| {
            value
                .write_encoded(out)
                .expect("writing to a String cannot fail")
        });
    }
    out.push('}');
    out
}

/// Appends the JSON string of what `write` appends to `out`: written as is, then
/// escaped by serde_json only if it holds a character JSON escapes.
fn push_json_string(out: &mut String, write: impl FnOnce(&mut String)) {
    out.push('"');
    let start = out.len();
    write(out);
    if out.as_bytes()[start..]
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
    {
        let raw = out.split_off(start);
        let quoted = serde_json::to_string(&raw).expect("a string serializes");
        out.push_str(&quoted[1..quoted.len() - 1]);
    }
    out.push('"');
}

/// Reads a base (see [`encode_base`]), its field names taken from `names` (and added to
/// them when new): one allocation per name per store instead of one per name per pair,
/// which was a tenth of reading a steady-state cycle's pairs.
pub(super) fn decode_base(
    text: &str,
    names: &mut std::collections::HashSet<Name>,
) -> serde_json::Result<BTreeMap<Name, Value>> {
    use serde::de::{DeserializeSeed, MapAccess, Visitor};
    struct Base<'n>(&'n mut std::collections::HashSet<Name>);
    impl<'de> DeserializeSeed<'de> for Base<'_> {
        type Value = BTreeMap<Name, Value>;
        fn deserialize<D: serde::Deserializer<'de>>(
            self,
            d: D,
        ) -> std::result::Result<Self::Value, D::Error> {
            d.deserialize_map(self)
        }
    }
    impl<'de> Visitor<'de> for Base<'_> {
        type Value = BTreeMap<Name, Value>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a base: field name → encoded value")
        }
        fn visit_map<A: MapAccess<'de>>(
            self,
            mut map: A,
        ) -> std::result::Result<Self::Value, A::Error> {
            let mut base = BTreeMap::new();
            while let Some(FieldName(name)) = map.next_key()? {
                base.insert(shared_name(self.0, &name), map.next_value()?);
            }
            Ok(base)
        }
    }
    /// A name borrowed from the text when it has no escapes.
    struct FieldName<'de>(Cow<'de, str>);
    impl<'de> Deserialize<'de> for FieldName<'de> {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
            struct Text;
            impl<'de> Visitor<'de> for Text {
                type Value = FieldName<'de>;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a field name")
                }
                fn visit_borrowed_str<E>(self, v: &'de str) -> std::result::Result<Self::Value, E> {
                    Ok(FieldName(Cow::Borrowed(v)))
                }
                fn visit_str<E>(self, v: &str) -> std::result::Result<Self::Value, E> {
                    Ok(FieldName(Cow::Owned(v.to_owned())))
                }
            }
            d.deserialize_str(Text)
        }
    }
    if let Some(base) = decode_plain_base(text, names) {
        return Ok(base);
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let base = Base(names).deserialize(&mut de)?;
    de.end()?;
    Ok(base)
}

/// [`decode_base`] without serde for the common base: no escaped character anywhere
/// (`write_base` escapes only quotes, backslashes and control characters) and no space,
/// as syncline writes it — then every string runs to the next quote. Reading pairs is
/// most of a steady-state cycle, and serde's map machinery was most of reading a pair.
/// `None` for anything else, which serde reads (and names, if it is broken).
pub(super) fn decode_plain_base(
    text: &str,
    names: &mut std::collections::HashSet<Name>,
) -> Option<BTreeMap<Name, Value>> {
    if text.contains('\\') {
        return None;
    }
    let mut rest = text.strip_prefix('{')?.strip_suffix('}')?;
    let mut base = BTreeMap::new();
    // A quoted string at the start of `rest`, and what follows it.
    fn quoted(rest: &str) -> Option<(&str, &str)> {
        rest.strip_prefix('"')?.split_once('"')
    }
    while !rest.is_empty() {
        let (name, after) = quoted(rest)?;
        let (encoded, after) = quoted(after.strip_prefix(':')?)?;
        rest = match after.strip_prefix(',') {
            Some(more) if !more.is_empty() => more,
            Some(_) => return None,
            None if after.is_empty() => after,
            None => return None,
        };
        base.insert(shared_name(names, name), Value::decode(encoded).ok()?);
    }
    Some(base)
}

/// `name` as the store's one shared copy of it, made on first sight.
fn shared_name(names: &mut std::collections::HashSet<Name>, name: &str) -> Name {
    if let Some(known) = names.get(name) {
        return known.clone();
    }
    let new = Name::from(name);
    names.insert(new.clone());
    new
}
