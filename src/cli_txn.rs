//! `rangedb txn` reading etcdctl's transaction syntax, so scripts written for
//! `etcdctl txn` work: compares, a blank line, the operations run if every compare
//! holds, a blank line, the operations run otherwise.
//!
//! ```text
//! value("k") = "v"          mod("k") > "3"         create("k") = "0"
//!                                                  (blank line)
//! put k v                   get k                  del k
//!                                                  (blank line)
//! put k other
//! ```
//!
//! It runs as one rangedb transaction (`Client::compare_txn`, retried on conflict): every key
//! compared or read is validated at commit, so the outcome is the one a serial
//! execution would give. `mod` is the key's mod revision in its range; rangedb keeps
//! no create revision or version count, so `create` and `version` compare only with
//! "0" (the key is absent).

use crate::client::compare::{Cmp, Compare, CompareTxn, Op, OpResult, Outcome, Target};
use crate::client::escape;

/// Splits a line into words: bare, or double-quoted with `\"` and `\\` escapes.
fn words(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&first) = chars.peek() else { return Ok(out) };
        let mut word = String::new();
        if first == '"' {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(format!("unterminated quote in: {line}")),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(c) => word.push(c),
                        None => return Err(format!("dangling backslash in: {line}")),
                    },
                    Some(c) => word.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                word.push(c);
                chars.next();
            }
        }
        out.push(word);
    }
}

/// Parses one compare line, e.g. `value("k") = "v"`.
///
/// # Errors
/// A line that is not `target("key") op "operand"`.
pub fn parse_compare(line: &str) -> Result<Compare, String> {
    let bad =
        || format!("bad compare {line:?}: want e.g. value(\"k\") = \"v\" or mod(\"k\") > \"3\"");
    let open = line.find('(').ok_or_else(bad)?;
    let close = line.rfind(')').ok_or_else(bad)?;
    if close < open {
        return Err(bad());
    }
    let target = match line[..open].trim() {
        "value" | "val" => Target::Value,
        "mod" => Target::Mod,
        "create" | "c" => Target::Create,
        "version" | "ver" => Target::Version,
        other => return Err(format!("unknown compare target {other:?} in {line:?}")),
    };
    let key = words(&line[open + 1..close])?;
    let [key] = key.as_slice() else { return Err(bad()) };
    let rest = words(&line[close + 1..])?;
    let [cmp, operand] = rest.as_slice() else { return Err(bad()) };
    let cmp = match cmp.as_str() {
        "=" | "==" => Cmp::Equal,
        "!=" => Cmp::NotEqual,
        "<" => Cmp::Less,
        ">" => Cmp::Greater,
        other => return Err(format!("unknown comparison {other:?} in {line:?}")),
    };
    if target != Target::Value && operand.parse::<u64>().is_err() {
        return Err(format!("{line:?}: a revision compare takes a number"));
    }
    if matches!(target, Target::Create | Target::Version) && operand != "0" {
        return Err(format!(
            "{line:?}: rangedb keeps no create revision or version count; create() and \
             version() compare with \"0\" only (the key is absent)"
        ));
    }
    Ok(Compare {
        target,
        key: key.clone().into_bytes(),
        cmp,
        operand: operand.clone().into_bytes(),
    })
}

/// Parses one operation line: `put k v`, `get k`, `del k`.
///
/// # Errors
/// Another command or the wrong number of words.
pub fn parse_op(line: &str) -> Result<Op, String> {
    let words = words(line)?;
    match words.as_slice() {
        [put, key, value] if put == "put" => {
            Ok(Op::Put { key: key.clone().into_bytes(), value: value.clone().into_bytes() })
        }
        [get, key] if get == "get" => Ok(Op::Get { key: key.clone().into_bytes() }),
        [del, key] if del == "del" || del == "delete" => {
            Ok(Op::Del { key: key.clone().into_bytes() })
        }
        _ => Err(format!("bad operation {line:?}: want put KEY VALUE, get KEY or del KEY")),
    }
}

/// Parses the whole text: compares, blank line, success ops, blank line, failure ops.
///
/// # Errors
/// The first line that does not parse, with its number.
pub fn parse(text: &str) -> Result<CompareTxn, String> {
    let mut txn = CompareTxn::default();
    let mut section = 0;
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            section += 1;
            if section > 2 {
                break;
            }
            continue;
        }
        let at = |e: String| format!("line {}: {e}", number + 1);
        match section {
            0 => txn.compares.push(parse_compare(line).map_err(at)?),
            1 => txn.success.push(parse_op(line).map_err(at)?),
            _ => txn.failure.push(parse_op(line).map_err(at)?),
        }
    }
    Ok(txn)
}

/// The outcome as etcdctl prints it: SUCCESS or FAILURE, then each result.
pub fn render(outcome: &Outcome) -> String {
    let mut out = String::from(if outcome.succeeded { "SUCCESS\n" } else { "FAILURE\n" });
    for result in &outcome.results {
        out.push('\n');
        match result {
            OpResult::Put { .. } => out.push_str("OK\n"),
            OpResult::Get { key, kv: Some(kv) } => {
                out.push_str(&format!("{}\n{}\n", escape(key), escape(&kv.value)));
            }
            OpResult::Get { kv: None, .. } => {}
            OpResult::Del { deleted, .. } => out.push_str(&format!("{deleted}\n")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcdctl_examples_parse() {
        let text = "mod(\"key1\") > \"0\"\nvalue(\"key2\") = \"a b\"\n\nput key1 \"overwrote-key1\"\nget key2\n\ndel key1\n";
        let txn = parse(text).unwrap();
        assert_eq!(txn.compares.len(), 2);
        assert_eq!(txn.compares[1].operand, b"a b");
        assert_eq!(txn.compares[0].cmp, Cmp::Greater);
        assert_eq!(
            txn.success,
            vec![
                Op::Put { key: b"key1".to_vec(), value: b"overwrote-key1".to_vec() },
                Op::Get { key: b"key2".to_vec() }
            ]
        );
        assert_eq!(txn.failure, vec![Op::Del { key: b"key1".to_vec() }]);
        // No compares: an empty first section.
        let only_ops = parse("\nput a 1\n").unwrap();
        assert!(only_ops.compares.is_empty());
        assert_eq!(only_ops.success.len(), 1);
    }

    #[test]
    fn bad_lines_are_named() {
        assert!(parse("value(\"k\") ~ \"v\"\n").unwrap_err().contains("line 1"));
        assert!(parse("\nfrobnicate k\n").unwrap_err().contains("line 2"));
        assert!(parse_compare("mod(\"k\") > \"x\"").is_err());
        assert!(parse_compare("create(\"k\") = \"5\"").unwrap_err().contains("no create revision"));
        assert!(parse_op("put \"unterminated v").is_err());
    }

    #[test]
    fn compares_follow_etcd() {
        let kv =
            crate::range::kv::KeyValue { key: b"k".to_vec(), value: b"v".to_vec(), revision: 7 };
        let c = |line: &str| parse_compare(line).unwrap();
        assert!(crate::client::compare::holds(&c("value(\"k\") = \"v\""), Some(&kv)));
        assert!(!crate::client::compare::holds(&c("value(\"k\") = \"v\""), None));
        assert!(crate::client::compare::holds(&c("value(\"k\") != \"v\""), None));
        assert!(crate::client::compare::holds(&c("mod(\"k\") > \"6\""), Some(&kv)));
        assert!(crate::client::compare::holds(&c("mod(\"k\") = \"0\""), None));
        assert!(crate::client::compare::holds(&c("create(\"k\") = \"0\""), None));
        assert!(!crate::client::compare::holds(&c("create(\"k\") = \"0\""), Some(&kv)));
        assert!(crate::client::compare::holds(&c("version(\"k\") > \"0\""), Some(&kv)));
    }
}
