//! IAM identity-policy statements evaluated as IAM does for one request, for the policy tests:
//! an explicit Deny wins, else any matching Allow allows, else denied. Actions match
//! case-insensitively with `*` and `?`; resources match with `*` and `?`; conditions support
//! `StringEquals` and `StringLike` on request context keys (a key the request lacks makes the
//! statement not apply). Anything else (NotAction, NotResource, another operator) panics, so a
//! policy this evaluator cannot read fails the test instead of passing it.
//!
//! Statements come from a translated template with its intrinsics resolved by [`resolve`]
//! (`Fn::Sub`, `Ref` to parameters and pseudo parameters).

use std::collections::HashMap;

use serde_json::Value;

/// One request: an action (`s3:PutObject`), a resource ARN and the condition context
/// (`s3:prefix` for a ListBucket).
#[derive(Debug, Clone)]
pub struct Request {
    pub action: String,
    pub resource: String,
    pub context: HashMap<String, String>,
}

impl Request {
    pub fn new(action: &str, resource: &str) -> Request {
        Request {
            action: action.to_owned(),
            resource: resource.to_owned(),
            context: HashMap::new(),
        }
    }

    pub fn with(mut self, key: &str, value: &str) -> Request {
        self.context.insert(key.to_owned(), value.to_owned());
        self
    }
}

/// `pattern` with `*` (any run) and `?` (one character) matches `text`.
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // Classic two-pointer glob with backtracking to the last star.
    let (mut i, mut j, mut star, mut mark) = (0usize, 0usize, None::<usize>, 0usize);
    while j < t.len() {
        if i < p.len() && (p[i] == '?' || p[i] == t[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    while i < p.len() && p[i] == '*' {
        i += 1;
    }
    i == p.len()
}

fn list(v: &Value) -> Vec<&Value> {
    match v {
        Value::Array(a) => a.iter().collect(),
        Value::Null => Vec::new(),
        other => vec![other],
    }
}

fn strings(v: &Value, what: &str) -> Vec<String> {
    list(v)
        .into_iter()
        .map(|s| {
            s.as_str()
                .unwrap_or_else(|| panic!("{what}: not a string after resolving: {s}"))
                .to_owned()
        })
        .collect()
}

fn condition_holds(condition: &Value, req: &Request) -> bool {
    let Some(ops) = condition.as_object() else {
        return true;
    };
    ops.iter().all(|(op, keys)| {
        keys.as_object()
            .unwrap_or_else(|| panic!("condition {op}: {keys}"))
            .iter()
            .all(|(key, values)| {
                let Some(actual) = req.context.get(key) else {
                    return false;
                };
                let values = strings(values, key);
                match op.as_str() {
                    "StringEquals" => values.iter().any(|v| v == actual),
                    "StringLike" => values.iter().any(|v| wildcard_match(v, actual)),
                    other => panic!("a condition operator this evaluator does not know: {other}"),
                }
            })
    })
}

fn statement_applies(st: &Value, req: &Request) -> bool {
    assert!(
        st.get("NotAction").is_none() && st.get("NotResource").is_none() && st.get("NotPrincipal").is_none(),
        "a statement this evaluator does not read: {st}"
    );
    let action = strings(&st["Action"], "Action")
        .iter()
        .any(|a| wildcard_match(&a.to_ascii_lowercase(), &req.action.to_ascii_lowercase()));
    let resource = strings(&st["Resource"], "Resource")
        .iter()
        .any(|r| wildcard_match(r, &req.resource));
    action && resource && st.get("Condition").is_none_or(|c| condition_holds(c, req))
}

/// Whether `statements` allow `req`.
pub fn allows(statements: &[Value], req: &Request) -> bool {
    let mut allowed = false;
    for st in statements {
        if !statement_applies(st, req) {
            continue;
        }
        match st["Effect"].as_str() {
            Some("Deny") => return false,
            Some("Allow") => allowed = true,
            other => panic!("Effect {other:?}"),
        }
    }
    allowed
}

/// `v` with `Fn::Sub` (string form) and `Ref` resolved from `params` (which should name the
/// pseudo parameters it uses, e.g. `AWS::Partition`). An unknown name panics.
pub fn resolve(v: &Value, params: &HashMap<&str, &str>) -> Value {
    match v {
        Value::Object(o) if o.len() == 1 && o.contains_key("Fn::Sub") => {
            let template = o["Fn::Sub"].as_str().expect("Fn::Sub in its string form");
            let mut out = String::new();
            let mut rest = template;
            while let Some(start) = rest.find("${") {
                out.push_str(&rest[..start]);
                let end = rest[start..].find('}').expect("a closed ${...}") + start;
                let name = &rest[start + 2..end];
                out.push_str(params.get(name).unwrap_or_else(|| panic!("Fn::Sub names {name}, not given")));
                rest = &rest[end + 1..];
            }
            out.push_str(rest);
            Value::String(out)
        }
        Value::Object(o) if o.len() == 1 && o.contains_key("Ref") => {
            let name = o["Ref"].as_str().unwrap();
            Value::String(params.get(name).unwrap_or_else(|| panic!("Ref {name}, not given")).to_string())
        }
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), resolve(v, params))).collect()),
        Value::Array(a) => Value::Array(a.iter().map(|v| resolve(v, params)).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard_match("inbox/1/*", "inbox/1/a.xml"));
        assert!(wildcard_match("inbox/1/*", "inbox/1/"));
        assert!(!wildcard_match("inbox/1/*", "inbox/12/a.xml"));
        assert!(!wildcard_match("inbox/1/*", "inbox/2/a.xml"));
        assert!(wildcard_match("s3:*", "s3:putobject"));
        assert!(wildcard_match("a?c*", "abcdef"));
        assert!(!wildcard_match("a?c", "ac"));
        assert!(wildcard_match("*", ""));
    }

    #[test]
    fn deny_wins_and_conditions_need_their_key() {
        let sts = vec![
            serde_json::json!({"Effect": "Allow", "Action": "s3:*", "Resource": "arn:b/*"}),
            serde_json::json!({"Effect": "Deny", "Action": "s3:GetObject", "Resource": "arn:b/secret/*"}),
            serde_json::json!({"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:b",
                               "Condition": {"StringLike": {"s3:prefix": ["a/*"]}}}),
        ];
        assert!(allows(&sts, &Request::new("s3:GetObject", "arn:b/x")));
        assert!(!allows(&sts, &Request::new("s3:GetObject", "arn:b/secret/x")));
        assert!(!allows(&sts, &Request::new("s3:ListBucket", "arn:b")));
        assert!(allows(&sts, &Request::new("s3:ListBucket", "arn:b").with("s3:prefix", "a/x")));
        assert!(!allows(&sts, &Request::new("s3:ListBucket", "arn:b").with("s3:prefix", "b/x")));
    }
}
