//! Least privilege, checked three ways against something concrete:
//!
//! 1. Each function's IAM role in the template grants exactly the (action, resource) pairs in
//!    `functions/<name>/aws-access.txt`, where each resource is named through the function's own
//!    environment (so a grant on a resource the function is not configured to use fails), its
//!    event source queue or its log group; no action or resource is a wildcard `*`.
//! 2. Each action in those lists is one the relay's code performs: the test reads the SDK calls
//!    (`client.<op>()`) in the adapters and function crates and maps each to its IAM action(s);
//!    an SDK call this test does not know fails it, so a new call cannot slip past the lists.
//! 3. Per function, the queues it sends to are the `*_url` settings its `lib.rs` reads, and the
//!    table, bucket and secrets appear exactly when its code builds the store, the bucket and
//!    the KSeF clients.
//!
//! 4. The KMS key that seals the cached KSeF tokens and session keys can be used (to seal or to
//!    open) by exactly the functions that call KSeF, and by no one else: not intake or report
//!    (who can read the table), not the account (whose IAM policies could otherwise widen it).
//!
//! And the other way round, at run time: `template_on_emulator.rs` routes each function's AWS
//! calls through a recording proxy and fails if any call is not allowed by its role.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use relay_tests::template::{covers, granted, key_grants, repo_root, resources_of, target, translated};

/// Function directory -> logical id in the template.
const FUNCTIONS: [(&str, &str); 7] = [
    ("intake", "IntakeFunction"),
    ("send", "SendFunction"),
    ("send-batch", "SendBatchFunction"),
    ("status", "StatusFunction"),
    ("dlq-replay", "DlqReplayFunction"),
    ("report", "ReportFunction"),
    ("sweeper", "SweeperFunction"),
];

/// The SDK operations the relay calls -> the IAM actions they need. `transact_write_items` is
/// authorised per item: the store writes Put and ConditionCheck items.
const SDK_TO_IAM: [(&str, &[&str]); 19] = [
    ("get_item", &["dynamodb:GetItem"]),
    ("query", &["dynamodb:Query"]),
    ("put_item", &["dynamodb:PutItem"]),
    ("update_item", &["dynamodb:UpdateItem"]),
    ("delete_item", &["dynamodb:DeleteItem"]),
    ("transact_write_items", &["dynamodb:PutItem", "dynamodb:ConditionCheckItem"]),
    ("scan", &["dynamodb:Scan"]),
    ("send_message", &["sqs:SendMessage"]),
    ("receive_message", &["sqs:ReceiveMessage"]),
    ("delete_message", &["sqs:DeleteMessage"]),
    ("change_message_visibility", &["sqs:ChangeMessageVisibility"]),
    ("get_queue_attributes", &["sqs:GetQueueAttributes"]),
    ("put_object", &["s3:PutObject"]),
    // GetObject of a named version needs s3:GetObjectVersion too (the intake reads the one an
    // S3 event names); HeadObject is authorised by s3:GetObject.
    ("get_object", &["s3:GetObject", "s3:GetObjectVersion"]),
    ("head_object", &["s3:GetObject"]),
    ("get_secret_value", &["secretsmanager:GetSecretValue"]),
    ("publish", &["sns:Publish"]),
    ("generate_data_key", &["kms:GenerateDataKey"]),
    ("decrypt", &["kms:Decrypt"]),
];

/// Actions Lambda itself performs with the function's role: polling the event source queue and
/// writing the logs. They are not SDK calls in our code.
const PLATFORM: [&str; 5] = [
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:GetQueueAttributes",
    "logs:CreateLogStream",
    "logs:PutLogEvents",
];

fn manifest_path(dir: &str) -> std::path::PathBuf {
    repo_root().join("functions").join(dir).join("aws-access.txt")
}

/// (action, resource token) lines of a manifest.
fn manifest(dir: &str) -> BTreeSet<(String, String)> {
    let path = manifest_path(dir);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    // A comment is a whole line from `#`, or ` #` after the resource (`#` inside a token is a
    // partition key's: `DOC#*`).
    text.lines()
        .map(|l| {
            if l.trim_start().starts_with('#') {
                ""
            } else {
                l.split(" #").next().unwrap_or("").trim()
            }
        })
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut parts = l.split_whitespace();
            let (a, r) = (
                parts.next().unwrap(),
                parts
                    .next()
                    .unwrap_or_else(|| panic!("{}: {l:?} names no resource", path.display())),
            );
            assert!(parts.next().is_none(), "{}: {l:?}", path.display());
            (a.to_owned(), r.to_owned())
        })
        .collect()
}

/// A manifest token resolved through the function's environment, event source and log group.
fn resolve(token: &str, function: &str) -> String {
    let t = translated();
    let f = &t["Resources"][function]["Properties"];
    let env = &f["Environment"]["Variables"];
    match token {
        "EVENT_SOURCE" => {
            let (_, esm) = resources_of(t, "AWS::Lambda::EventSourceMapping")
                .into_iter()
                .find(|(_, r)| target(&r["Properties"]["FunctionName"]) == Some(function))
                .unwrap_or_else(|| panic!("{function} has no event source"));
            return target(&esm["Properties"]["EventSourceArn"]).unwrap().to_owned();
        }
        "LOG_GROUP" => return target(&f["LoggingConfig"]["LogGroup"]).expect("LoggingConfig.LogGroup").to_owned(),
        _ => {}
    }
    if let Some(var) = token.strip_suffix('*').filter(|v| v.ends_with("_PREFIX")) {
        let param = target(&env[var]).unwrap_or_else(|| panic!("{function} has no {var}"));
        return format!("secret:{param}*");
    }
    if let Some(rest) = token.strip_prefix("REPLAY_QUEUES[") {
        let (name, which) = rest.split_once("].").expect("REPLAY_QUEUES[name].dlq|target");
        let sub = env["REPLAY_QUEUES"]["Fn::Sub"].as_str().expect("REPLAY_QUEUES from queue refs");
        let entry = sub
            .split(',')
            .find_map(|e| e.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("REPLAY_QUEUES has no {name}="));
        let (dlq, queue) = entry.split_once('>').unwrap();
        let pick = if which == "dlq" { dlq } else { queue };
        return pick.trim_start_matches("${").trim_end_matches('}').to_owned();
    }
    // `VAR[P1,P2]`: the grant is limited to items whose partition key matches P1 or P2.
    if let Some((var, keys)) = token.strip_suffix(']').and_then(|t| t.split_once('[')) {
        return format!("{}[{keys}]", resolve(var, function));
    }
    let (var, suffix) = token
        .split_once('/')
        .map(|(v, s)| (v, format!("/{s}")))
        .unwrap_or((token, String::new()));
    let logical = target(&env[var]).unwrap_or_else(|| panic!("{function}: {var} is not in its environment (as a Ref)"));
    format!("{logical}{suffix}")
}

fn deployed_functions() -> Vec<(&'static str, &'static str)> {
    FUNCTIONS
        .into_iter()
        .filter(|(_, logical)| translated()["Resources"].get(*logical).is_some())
        .collect()
}

#[test]
fn each_role_grants_exactly_what_its_function_uses_and_no_wildcard() {
    let functions = deployed_functions();
    assert_eq!(
        functions.len(),
        resources_of(translated(), "AWS::Lambda::Function").len(),
        "a function this test does not know"
    );
    for (dir, function) in functions {
        let wanted: BTreeSet<(String, String)> = manifest(dir).into_iter().map(|(a, r)| (a, resolve(&r, function))).collect();
        let granted = granted(function);
        let extra: Vec<_> = granted.difference(&wanted).collect();
        let missing: Vec<_> = wanted.difference(&granted).collect();
        assert!(
            extra.is_empty() && missing.is_empty(),
            "{function}: the role grants more than {} lists: {extra:?}; it lacks: {missing:?}",
            manifest_path(dir).display()
        );
    }
}

fn rust_sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() && p.file_name().is_some_and(|n| n != "tests" && n != "target") {
            rust_sources(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The non-test code of a file, with whitespace removed so chained calls read `client.op()`.
fn code_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let code = text.split("#[cfg(test)]").next().unwrap_or("");
    code.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<String>()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect()
}

/// SDK operations called on an AWS client (`client.op()`, `self.client.op()`, `clients.s3.op()`...).
fn sdk_calls(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for marker in ["client.", "dynamodb.", "sqs.", "s3.", "secrets.", "sns."] {
        for (i, _) in code.match_indices(marker) {
            let rest = &code[i + marker.len()..];
            let op: String = rest.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
            if !op.is_empty() && rest[op.len()..].starts_with("()") && op != "clone" {
                out.insert(op);
            }
        }
    }
    out
}

/// Which crates' code a deployed function runs (the adapters and the shared glue).
fn code_roots() -> Vec<std::path::PathBuf> {
    let root = repo_root();
    let mut dirs = vec![
        root.join("crates/aws/src"),
        root.join("crates/lambda/src"),
        root.join("crates/pipeline/src"),
    ];
    for (dir, _) in FUNCTIONS {
        let src = root.join("functions").join(dir).join("src");
        if src.exists() {
            dirs.push(src);
        }
    }
    dirs
}

#[test]
fn every_listed_action_is_one_the_code_performs_and_every_sdk_call_is_known() {
    let known: BTreeMap<&str, &[&str]> = SDK_TO_IAM.into_iter().collect();
    let mut performed = BTreeSet::new();
    for dir in code_roots() {
        let mut files = Vec::new();
        rust_sources(&dir, &mut files);
        for file in files {
            // Provisioning creates resources for tests and local runs, never in a function.
            if file.ends_with("provision.rs") {
                continue;
            }
            let code = code_of(&file);
            // Only code that uses an AWS SDK crate can call one (the KSeF client has methods too).
            if !code.contains("aws_sdk_") {
                continue;
            }
            for op in sdk_calls(&code) {
                let actions = known.get(op.as_str()).unwrap_or_else(|| {
                    panic!(
                        "{} calls the SDK operation {op}(), which this test does not know: add it to SDK_TO_IAM and to the aws-access.txt of every function that reaches it",
                        file.display()
                    )
                });
                performed.extend(actions.iter().map(|a| a.to_string()));
            }
        }
    }
    for (dir, _) in deployed_functions() {
        for (action, resource) in manifest(dir) {
            let platform = PLATFORM.contains(&action.as_str()) && (resource == "EVENT_SOURCE" || resource == "LOG_GROUP");
            assert!(
                platform || performed.contains(&action),
                "functions/{dir}/aws-access.txt grants {action}, which no code performs (performed: {performed:?})"
            );
        }
    }
}

#[test]
fn each_function_is_granted_the_queues_and_services_its_code_uses() {
    for (dir, function) in deployed_functions() {
        let lib = repo_root().join("functions").join(dir).join("src/lib.rs");
        let code = code_of(&lib);
        let env = &translated()["Resources"][function]["Properties"]["Environment"]["Variables"];
        let list = manifest(dir);
        // Queue URLs the code reads from its settings (`s.send_queue_url` -> SEND_QUEUE_URL).
        let mut used_queues = BTreeSet::new();
        for (i, _) in code.match_indices("_url") {
            let start = code[..i]
                .rfind(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .map_or(0, |p| p + 1);
            let var = code[start..i + 4].to_uppercase();
            if env.get(&var).is_some() {
                used_queues.insert(var);
            }
        }
        if code.contains(".queues") {
            used_queues.insert("REPLAY_QUEUES".to_owned());
        }
        let listed_queues: BTreeSet<String> = list
            .iter()
            .filter(|(a, r)| a.starts_with("sqs:") && r != "EVENT_SOURCE")
            .map(|(_, r)| r.split('[').next().unwrap().to_owned())
            .collect();
        assert_eq!(
            listed_queues, used_queues,
            "{dir}: the queues in aws-access.txt vs those its lib.rs uses"
        );
        let uses = |service: &str| list.iter().any(|(a, _)| a.starts_with(service));
        assert_eq!(
            uses("s3:"),
            code.contains("S3Archive::new"),
            "{dir}: S3 access vs building the bucket adapter"
        );
        assert_eq!(
            uses("dynamodb:"),
            code.contains("DynamoDocumentStore::new"),
            "{dir}: table access vs the store"
        );
        let ksef = code.contains("ksef_contexts(");
        assert_eq!(uses("secretsmanager:"), ksef, "{dir}: token secrets vs building KSeF clients");
        assert_eq!(uses("kms:"), ksef, "{dir}: the cache key vs building KSeF clients");
        // Unrestricted cache writes are for the KSeF users only; a grant limited to some keys
        // (intake's send-mode log) is checked by `intake_touches_only_documents_and_send_mode_logs`,
        // the availability poll's just below.
        let cache = list
            .iter()
            .any(|(a, r)| (a == "dynamodb:UpdateItem" || a == "dynamodb:DeleteItem") && !r.contains('['));
        assert_eq!(
            cache, ksef,
            "{dir}: the shared KSeF cache (UpdateItem/DeleteItem) is for KSeF users only"
        );
        // The availability poll writes one kind of shared-cache entry, and its role is limited to
        // those entries' keys (checked on the template), never the sealed KSeF secrets.
        let availability_only = !ksef && code.contains("poll_availability");
        if availability_only {
            let role = function.replace("Function", "Role");
            let statements = &translated()["Resources"][role.as_str()]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"];
            let writes: Vec<&serde_json::Value> = statements
                .as_array()
                .unwrap()
                .iter()
                .filter(|st| st["Action"].to_string().contains("dynamodb:UpdateItem"))
                .collect();
            assert!(!writes.is_empty(), "{dir}: no statement grants the availability write");
            for st in writes {
                assert_eq!(
                    st["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"],
                    serde_json::json!(["CACHE#relay/availability/*"]),
                    "{dir}: the cache write must be limited to the availability entries: {st}"
                );
            }
        }
    }
}

/// What uses a KMS key's contents: sealing, opening, re-encrypting, or granting that to others.
fn uses_key_contents(action_pattern: &str) -> bool {
    const USES: [&str; 10] = [
        "kms:Decrypt",
        "kms:Encrypt",
        "kms:GenerateDataKey",
        "kms:GenerateDataKeyWithoutPlaintext",
        "kms:GenerateDataKeyPair",
        "kms:GenerateDataKeyPairWithoutPlaintext",
        "kms:ReEncryptFrom",
        "kms:ReEncryptTo",
        "kms:CreateGrant",
        "kms:DeriveSharedSecret",
    ];
    let matches = |a: &str| match action_pattern.strip_suffix('*') {
        Some(prefix) => a.starts_with(prefix),
        None => a == action_pattern,
    };
    action_pattern == "*" || USES.iter().any(|a| matches(a))
}

#[test]
fn only_the_ksef_callers_can_open_the_cached_ksef_secrets() {
    let t = translated();
    let keys = resources_of(t, "AWS::KMS::Key");
    assert_eq!(keys.len(), 1, "one key seals the shared KSeF cache");
    let key = keys[0].0;
    // The roles of the functions whose code calls KSeF (and so writes and reads the cache).
    let mut ksef_roles = BTreeSet::new();
    let mut others = BTreeSet::new();
    for (dir, function) in deployed_functions() {
        let lib = code_of(&repo_root().join("functions").join(dir).join("src/lib.rs"));
        let role = target(&t["Resources"][function]["Properties"]["Role"]).unwrap().to_owned();
        let env = &t["Resources"][function]["Properties"]["Environment"]["Variables"];
        if lib.contains("ksef_contexts(") {
            assert_eq!(
                target(&env["KSEF_CACHE_KEY_ID"]),
                Some(key),
                "{function} seals with the stack's key"
            );
            ksef_roles.insert(role);
        } else {
            assert!(
                env.get("KSEF_CACHE_KEY_ID").is_none(),
                "{function} does not call KSeF: it has no business with the key"
            );
            others.insert((dir, function, role));
        }
    }
    assert!(ksef_roles.len() >= 3, "send, status and dlq-replay call KSeF: {ksef_roles:?}");
    assert!(others.iter().any(|(d, ..)| *d == "intake") && others.iter().any(|(d, ..)| *d == "report"));

    let mut users = BTreeSet::new();
    for (action, principals) in key_grants(key) {
        for p in principals {
            assert_ne!(p, "*", "{key} lets anyone {action}");
            if uses_key_contents(&action) {
                assert_ne!(
                    p, "account-root",
                    "{key} lets the account {action}: any IAM policy (intake's, report's) could then open the cached tokens"
                );
                users.insert(p);
            }
        }
    }
    assert_eq!(users, ksef_roles, "who may seal or open the cached KSeF secrets");
    for (dir, function, role) in &others {
        let kms: Vec<_> = granted(function).into_iter().filter(|(a, _)| a.starts_with("kms:")).collect();
        assert!(
            kms.is_empty(),
            "{dir} ({role}) is granted {kms:?}: it must not open the cached KSeF secrets"
        );
    }
}

/// Intake parses untrusted XML, so what it can reach in the table is limited by partition key:
/// documents (`DOC#...`), the sellers' send-mode logs (`CACHE#sendmode/...`, the backlog rule
/// it runs) and, read only, the limits KSeF reported per seller (`CACHE#ksef/rate-limits/...`,
/// which that rule keeps to); never another cache entry (the sealed KSeF tokens and session
/// keys, the rate governors, the credential facts). Every DynamoDB grant of its role must carry
/// a `dynamodb:LeadingKeys` condition within those, and only the send-mode log may be updated.
#[test]
fn intake_touches_only_documents_and_send_mode_logs() {
    let allowed = ["DOC#*", "CACHE#sendmode/*", "CACHE#ksef/rate-limits/*"];
    let grants: Vec<(String, String)> = granted("IntakeFunction")
        .into_iter()
        .filter(|(a, _)| a.starts_with("dynamodb:"))
        .collect();
    assert!(
        grants
            .iter()
            .any(|(a, r)| a == "dynamodb:UpdateItem" && r == "DocumentsTable[CACHE#sendmode/*]"),
        "intake writes the send-mode log: {grants:?}"
    );
    for (action, resource) in &grants {
        let keys = resource
            .strip_suffix(']')
            .and_then(|r| r.split_once('['))
            .filter(|(table, _)| *table == "DocumentsTable")
            .map(|(_, k)| k.split(',').collect::<Vec<_>>())
            .unwrap_or_else(|| panic!("intake is granted {action} on {resource}: not limited to documents and send-mode logs"));
        for k in &keys {
            assert!(allowed.contains(k), "intake's {action} reaches items {k}: only {allowed:?}");
            // The cache entries intake must not reach (their names: crates/pipeline/src/sessions.rs,
            // crates/ksef-client/src/governor.rs, the credential facts).
            for other in [
                "CACHE#ksef/tokens/9999999999",
                "CACHE#ksef/session/9999999999",
                "CACHE#ratelog/9999999999@nat/InvoiceSend",
                "CACHE#relay/credential-facts/9999999999",
            ] {
                assert!(!covers(k, other), "intake's {action} on {k} reaches {other}");
            }
        }
        if matches!(action.as_str(), "dynamodb:UpdateItem" | "dynamodb:DeleteItem") {
            assert_eq!(keys, ["CACHE#sendmode/*"], "intake may update only the send-mode logs");
        }
        if keys.contains(&"CACHE#ksef/rate-limits/*") {
            assert!(
                action == "dynamodb:Query",
                "intake may only read the reported rate limits, not {action}"
            );
        }
    }
    assert!(grants.iter().all(|(a, _)| a != "dynamodb:DeleteItem" && a != "dynamodb:Scan"));
}
