//! The SAM template (`infra/template.yaml`) as tests see it: translated to plain CloudFormation
//! offline by `scripts/template_on_emulator.py` (aws-sam-translator from `.venv`), and deployed
//! as a stack to the AWS emulator.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repo")
        .to_path_buf()
}

fn python() -> PathBuf {
    let bin = repo_root().join(".venv/bin/python");
    assert!(
        bin.exists(),
        "the template tools are not installed: run `make test` (scripts/setup.sh installs aws-sam-translator into .venv)"
    );
    bin
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ksef-relay-template-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir.join(name)
}

fn run_script(args: &[&str]) {
    let out = Command::new(python())
        .arg(repo_root().join("scripts/template_on_emulator.py"))
        .args(args)
        .env("AWS_DEFAULT_REGION", crate::emulator::REGION)
        .output()
        .expect("run scripts/template_on_emulator.py");
    assert!(
        out.status.success(),
        "scripts/template_on_emulator.py {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("the script's output")).expect("JSON from the script")
}

/// The template translated from SAM to plain CloudFormation (once per test process).
pub fn translated() -> &'static Value {
    static TRANSLATED: OnceLock<Value> = OnceLock::new();
    TRANSLATED.get_or_init(|| translate_file("infra/template.yaml"))
}

/// Any template of the repository (a path from its root, e.g. `infra/erp-seller-access.yaml`),
/// translated the same way (a plain CloudFormation template passes through unchanged, its
/// short-form tags read).
pub fn translate_file(relative: &str) -> Value {
    let out = scratch(&format!("{}.json", relative.replace('/', "_")));
    let template = repo_root().join(relative);
    run_script(&["translate", template.to_str().unwrap(), out.to_str().unwrap()]);
    read_json(&out)
}

/// Deploys the translated template as stack `stack` to the emulator with these parameters and
/// returns what was created: `outputs`, `resources` (logical id -> type and physical id),
/// `functions` (logical id -> name and the environment as CloudFormation resolved it) and
/// `event_source_mappings`.
pub fn deploy_to_emulator(stack: &str, params: &[(&str, &str)]) -> Value {
    deploy_file_to_emulator("infra/template.yaml", stack, params)
}

/// [`deploy_to_emulator`] for another template of the repository (a path from its root).
pub fn deploy_file_to_emulator(relative: &str, stack: &str, params: &[(&str, &str)]) -> Value {
    let out = scratch(&format!("{stack}.json"));
    let template = repo_root().join(relative);
    let mut args: Vec<String> = vec![
        "deploy".into(),
        template.to_str().unwrap().into(),
        "--endpoint".into(),
        crate::emulator::endpoint().into(),
        "--stack".into(),
        stack.into(),
        "--out".into(),
        out.to_str().unwrap().into(),
    ];
    for (k, v) in params {
        args.push("--param".into());
        args.push(format!("{k}={v}"));
    }
    run_script(&args.iter().map(String::as_str).collect::<Vec<_>>());
    read_json(&out)
}

/// The resources of one type in the translated template: (logical id, resource).
pub fn resources_of<'a>(template: &'a Value, kind: &str) -> Vec<(&'a str, &'a Value)> {
    template["Resources"]
        .as_object()
        .expect("Resources")
        .iter()
        .filter(|(_, r)| r["Type"] == kind)
        .map(|(k, r)| (k.as_str(), r))
        .collect()
}

/// The logical id a `{"Ref": X}` or `{"Fn::GetAtt": [X, ...]}` points at.
pub fn target(v: &Value) -> Option<&str> {
    v.get("Ref")
        .and_then(Value::as_str)
        .or_else(|| v.get("Fn::GetAtt").and_then(|a| a.get(0)).and_then(Value::as_str))
}

/// A policy resource as "Logical[/suffix]" or "secret:Param*"; anything else fails.
pub fn canonical_resource(v: &Value, function: &str) -> String {
    if let Some(t) = target(v) {
        return t.to_owned();
    }
    if let Some(sub) = v.get("Fn::Sub").and_then(Value::as_str) {
        if let Some(rest) = sub.strip_prefix("${") {
            if let Some((logical, suffix)) = rest.split_once(".Arn}") {
                return format!("{logical}{suffix}");
            }
        }
        let secrets = "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:${";
        if let Some(param) = sub.strip_prefix(secrets).and_then(|r| r.strip_suffix("}*")) {
            return format!("secret:{param}*");
        }
    }
    panic!("{function}: a policy resource this test cannot tie to a resource: {v}");
}

fn as_list(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        other => vec![other.clone()],
    }
}

/// What the function's role grants, as (action, canonical resource).
pub fn granted(function: &str) -> BTreeSet<(String, String)> {
    let t = translated();
    let f = &t["Resources"][function]["Properties"];
    let role = target(&f["Role"]).unwrap_or_else(|| panic!("{function} has no role of its own"));
    let role_id = role;
    let users: Vec<&str> = resources_of(t, "AWS::Lambda::Function")
        .into_iter()
        .filter(|(_, r)| target(&r["Properties"]["Role"]) == Some(role))
        .map(|(k, _)| k)
        .collect();
    assert_eq!(users, [function], "{role} is shared");
    let role = &t["Resources"][role]["Properties"];
    assert!(role.get("ManagedPolicyArns").is_none(), "{function}: managed policies grant on `*`");
    let mut out = BTreeSet::new();
    for policy in role["Policies"].as_array().expect("inline policies") {
        for st in policy["PolicyDocument"]["Statement"].as_array().unwrap() {
            assert_eq!(st["Effect"], "Allow", "{function}: {st}");
            assert!(st.get("NotAction").is_none() && st.get("NotResource").is_none(), "{function}: {st}");
            let keys = leading_keys(st, function);
            for action in as_list(&st["Action"]) {
                let action = action.as_str().expect("an action").to_owned();
                assert!(!action.contains('*'), "{function} grants the wildcard action {action}");
                for resource in as_list(&st["Resource"]) {
                    assert_ne!(resource, "*", "{function} grants {action} on every resource");
                    let resource = canonical_resource(&resource, function);
                    out.insert((
                        action.clone(),
                        keys.as_ref().map_or(resource.clone(), |k| format!("{resource}[{k}]")),
                    ));
                }
            }
        }
    }
    // A KMS key's policy grants to roles by name, with no IAM policy needed: those count too.
    for (key, _) in resources_of(t, "AWS::KMS::Key") {
        for (action, principals) in key_grants(key) {
            if principals.iter().any(|p| p == role_id) {
                out.insert((action, key.to_owned()));
            }
        }
    }
    out
}

/// A statement's only accepted condition: `ForAllValues:StringLike` on `dynamodb:LeadingKeys`
/// (the items' partition keys it is limited to), as "P1,P2"; None without a condition. Any
/// other condition fails: this test could not say what it grants.
pub fn leading_keys(st: &Value, function: &str) -> Option<String> {
    let c = st.get("Condition")?;
    let cond = c
        .as_object()
        .filter(|o| o.len() == 1)
        .and_then(|o| o.get("ForAllValues:StringLike"));
    let keys = cond
        .and_then(|v| v.as_object().filter(|o| o.len() == 1))
        .and_then(|o| o.get("dynamodb:LeadingKeys"))
        .unwrap_or_else(|| panic!("{function}: a condition this test cannot read: {c}"));
    let keys: Vec<String> = as_list(keys)
        .iter()
        .map(|k| k.as_str().expect("a key pattern").to_owned())
        .collect();
    assert!(
        !keys.is_empty() && keys.iter().all(|k| k != "*"),
        "{function}: LeadingKeys {keys:?} limit nothing"
    );
    Some(keys.join(","))
}

/// The (action, principals) pairs a KMS key's policy allows; a principal is a role's logical id
/// (`!GetAtt Role.Arn`), `account-root` or `*`. Denies, conditions and `NotAction` fail.
pub fn key_grants(key: &str) -> Vec<(String, Vec<String>)> {
    let policy = &translated()["Resources"][key]["Properties"]["KeyPolicy"];
    let mut out = Vec::new();
    for st in policy["Statement"].as_array().expect("key policy statements") {
        assert_eq!(st["Effect"], "Allow", "{key}: {st}");
        assert!(
            st.get("NotAction").is_none() && st.get("NotPrincipal").is_none() && st.get("Condition").is_none(),
            "{key}: {st}"
        );
        let principals: Vec<String> = match &st["Principal"] {
            Value::String(s) => vec![s.clone()],
            p => as_list(&p["AWS"])
                .iter()
                .map(|v| {
                    if let Some(t) = target(v) {
                        return t.to_owned();
                    }
                    let root = "arn:${AWS::Partition}:iam::${AWS::AccountId}:root";
                    match v.get("Fn::Sub").and_then(Value::as_str) {
                        Some(sub) if sub == root => "account-root".to_owned(),
                        _ => panic!("{key}: a principal this test cannot name: {v}"),
                    }
                })
                .collect(),
        };
        for action in as_list(&st["Action"]) {
            out.push((action.as_str().expect("an action").to_owned(), principals.clone()));
        }
    }
    out
}

/// Whether a granted resource (as [`granted`] writes it, a trailing `*` matching any rest)
/// covers `resource`.
pub fn covers(granted: &str, resource: &str) -> bool {
    match granted.strip_suffix('*') {
        Some(prefix) => resource.starts_with(prefix),
        None => granted == resource,
    }
}
