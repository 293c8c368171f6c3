//! Every `--json` output goes through here, so all have one shape (formats/JSON.md): an object
//! whose first field is `"schema": "vdar-KIND/N"`, and CIDs as VMware writes them in
//! descriptors, 8 lowercase hex digits (`"fffffffe"`), which is what an administrator compares
//! with a descriptor. The library keeps CIDs as numbers (the archive's manifest stores them so).

use serde::Serialize;
use serde_json::{Map, Value};

/// The version of every `--json` schema; formats/JSON.md says when it changes.
pub const SCHEMA_VERSION: u32 = 1;

/// Fields that hold a CID wherever they appear.
const CID_FIELDS: [&str; 2] = ["cid", "parent_cid"];

/// `body` (a struct) as pretty JSON with its schema field first.
pub fn to_string<T: Serialize>(kind: &str, body: &T) -> anyhow::Result<String> {
    let mut v = serde_json::to_value(body)?;
    hex_cids(&mut v);
    let Value::Object(fields) = v else {
        anyhow::bail!("invariant: a --json report is an object");
    };
    let mut out = Map::new();
    let schema = format!("vdar-{kind}/{SCHEMA_VERSION}");
    out.insert("schema".into(), Value::String(schema));
    out.extend(fields);
    Ok(serde_json::to_string_pretty(&Value::Object(out))?)
}

/// Prints `body` to stdout (see [`to_string`]).
pub fn print<T: Serialize>(kind: &str, body: &T) -> anyhow::Result<()> {
    super::stdout::line(format_args!("{}", to_string(kind, body)?))
}

/// Rewrites every numeric CID field into 8 hex digits.
fn hex_cids(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                match x.as_u64() {
                    Some(n) if CID_FIELDS.contains(&k.as_str()) => {
                        *x = Value::String(format!("{n:08x}"));
                    }
                    _ => hex_cids(x),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(hex_cids),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_first_and_cids_hex() {
        let body = serde_json::json!({
            "disks": [{"chain": [{"cid": 0xfffffffe_u32, "parent_cid": 1, "size": 5}]}]
        });
        let text = to_string("list", &body).unwrap();
        assert!(
            text.starts_with("{\n  \"schema\": \"vdar-list/1\""),
            "{text}"
        );
        let v: Value = serde_json::from_str(&text).unwrap();
        let layer = &v["disks"][0]["chain"][0];
        assert_eq!(layer["cid"], "fffffffe");
        assert_eq!(layer["parent_cid"], "00000001");
        assert_eq!(layer["size"], 5);
    }
}
