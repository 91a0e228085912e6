//! Sellers kept apart at the bucket: the companion template `infra/erp-seller-access.yaml`
//! (deployed once per seller) gives a seller's ERP a role whose statements, evaluated as IAM
//! evaluates them, let it upload only under `inbox/{its nip}/` and read only its own
//! `outbox/`, `upo/` and `inbox/` folders. The same check run on widened copies of the policy
//! must fail, so it cannot pass by accident. The template also deploys to the AWS emulator, once
//! per seller. (That an invoice for seller B placed in A's folder is refused, answered in A's
//! outbox only, is shown on the deployed relay in `certificates_on_template.rs`.)

use std::collections::HashMap;

use relay_tests::iam_policy::{allows, resolve, Request};
use relay_tests::{emulator, template};
use serde_json::Value;

const TEMPLATE: &str = "infra/erp-seller-access.yaml";
const A: &str = "9999999999";
const B: &str = "5265877635";
const BUCKET: &str = "relay-123456789012-eu-central-1";

/// The ERP role's identity-policy statements as written in the template (unresolved).
fn role_statements(t: &Value) -> Vec<Value> {
    let roles = template::resources_of(t, "AWS::IAM::Role");
    assert_eq!(roles.len(), 1, "one role per seller stack");
    let props = &roles[0].1["Properties"];
    assert!(
        props.get("ManagedPolicyArns").is_none(),
        "no managed policies: they grant beyond the folders"
    );
    props["Policies"]
        .as_array()
        .expect("inline policies")
        .iter()
        .flat_map(|p| p["PolicyDocument"]["Statement"].as_array().unwrap().clone())
        .collect()
}

/// What is wrong with `statements` (resolved for seller `own`) for a shared bucket where `other`
/// is another seller: every forbidden request allowed and every needed one denied.
fn violations(statements: &[Value], own: &str, other: &str) -> Vec<String> {
    let object = |key: &str| format!("arn:aws:s3:::{BUCKET}/{key}");
    let bucket = format!("arn:aws:s3:::{BUCKET}");
    let needed = [
        Request::new("s3:PutObject", &object(&format!("inbox/{own}/FV-1.xml"))),
        Request::new("s3:GetObject", &object(&format!("outbox/{own}/FV-1.json"))),
        Request::new("s3:GetObject", &object(&format!("upo/{own}/{own}-20260201-0100000000AB-CD.xml"))),
        Request::new(
            "s3:GetObject",
            &object(&format!("qr/{own}/{own}-20260201-0100000000AB-CD-kod1.png")),
        ),
        Request::new("s3:ListBucket", &bucket).with("s3:prefix", &format!("outbox/{own}/FV-1.json")),
    ];
    let mut forbidden = vec![
        // Another seller's folders, both ways.
        Request::new("s3:PutObject", &object(&format!("inbox/{other}/FV-1.xml"))),
        Request::new("s3:GetObject", &object(&format!("outbox/{other}/FV-1.json"))),
        Request::new("s3:GetObject", &object(&format!("upo/{other}/x.xml"))),
        Request::new("s3:GetObject", &object(&format!("qr/{other}/x-kod1.png"))),
        Request::new("s3:GetObject", &object(&format!("inbox/{other}/FV-1.xml"))),
        Request::new("s3:ListBucket", &bucket).with("s3:prefix", &format!("outbox/{other}/")),
        Request::new("s3:ListBucket", &bucket).with("s3:prefix", ""),
        Request::new("s3:ListBucket", &bucket),
        // A NIP that merely starts with its own.
        Request::new("s3:PutObject", &object(&format!("inbox/{own}0/FV-1.xml"))),
        // The relay's own writing: results, receipts, the archive, reports.
        Request::new("s3:PutObject", &object(&format!("outbox/{own}/FV-1.json"))),
        Request::new("s3:PutObject", &object(&format!("upo/{own}/x.xml"))),
        Request::new("s3:PutObject", &object(&format!("qr/{own}/x-kod1.png"))),
        Request::new("s3:GetObject", &object("archive/ab/cd.xml")),
        Request::new("s3:GetObject", &object("reports/status/index.html")),
        Request::new("s3:PutObject", &object("inbox/FV-1.xml")),
        // Nothing beyond reading and writing objects.
        Request::new("s3:DeleteObject", &object(&format!("inbox/{own}/FV-1.xml"))),
        Request::new("s3:GetObjectVersion", &object(&format!("outbox/{other}/FV-1.json"))),
        Request::new("s3:PutBucketPolicy", &bucket),
        Request::new("s3:PutObject", &format!("arn:aws:s3:::another-bucket/inbox/{own}/FV-1.xml")),
    ];
    forbidden.push(Request::new("sqs:SendMessage", "arn:aws:sqs:eu-central-1:123456789012:intake"));
    let params: HashMap<&str, &str> = [("AWS::Partition", "aws"), ("ArchiveBucketName", BUCKET), ("SellerNip", own)].into();
    let resolved: Vec<Value> = statements.iter().map(|s| resolve(s, &params)).collect();
    let mut out = Vec::new();
    for r in &needed {
        if !allows(&resolved, r) {
            out.push(format!("{own}'s ERP cannot {} {} {:?}", r.action, r.resource, r.context));
        }
    }
    for r in &forbidden {
        if allows(&resolved, r) {
            out.push(format!("{own}'s ERP may {} {} {:?}", r.action, r.resource, r.context));
        }
    }
    out
}

#[test]
fn each_sellers_erp_role_reaches_only_its_own_folders() {
    let t = template::translate_file(TEMPLATE);
    let statements = role_statements(&t);
    assert_eq!(violations(&statements, A, B), Vec::<String>::new());
    assert_eq!(violations(&statements, B, A), Vec::<String>::new());

    // The trust policy names the ERP's principal only (a parameter), never `*`.
    let role = template::resources_of(&t, "AWS::IAM::Role")[0].1;
    let trust = &role["Properties"]["AssumeRolePolicyDocument"]["Statement"];
    assert_eq!(trust.as_array().unwrap().len(), 1);
    assert_eq!(trust[0]["Principal"]["AWS"], serde_json::json!({"Ref": "ErpPrincipalArn"}));
    assert_eq!(trust[0]["Action"], "sts:AssumeRole");
}

/// The check itself fails on policies that let sellers through each other's folders.
#[test]
fn the_check_fails_on_widened_policies() {
    let t = template::translate_file(TEMPLATE);
    let text = serde_json::to_string(&role_statements(&t)).unwrap();
    let mutants = [
        ("inbox for every seller", text.replace("/inbox/${SellerNip}/*", "/inbox/*")),
        ("outbox for every seller", text.replace("/outbox/${SellerNip}/*", "/outbox/*")),
        ("upo for every seller", text.replace("/upo/${SellerNip}/*", "/upo/*")),
        ("qr for every seller", text.replace("/qr/${SellerNip}/*", "/qr/*")),
        ("the whole bucket", text.replace("/inbox/${SellerNip}/*\"", "/*\"")),
        (
            "a folder without its slash",
            text.replace("/inbox/${SellerNip}/*", "/inbox/${SellerNip}*"),
        ),
        ("listing anywhere", text.replace("\"outbox/${SellerNip}/*\"", "\"*\"")),
        ("every S3 action", text.replace("\"s3:GetObject\"", "\"s3:*\"")),
        (
            "writing the results",
            text.replace("\"s3:GetObject\"", "[\"s3:GetObject\",\"s3:PutObject\"]"),
        ),
    ];
    for (what, mutant) in mutants {
        assert_ne!(mutant, text, "{what}: the mutation changed nothing (the template moved on?)");
        let statements: Vec<Value> = serde_json::from_str(&mutant).unwrap();
        assert!(
            !violations(&statements, A, B).is_empty(),
            "a policy granting {what} passed the check"
        );
    }
}

/// Deployed once per seller to the emulator: two stacks, two roles.
#[test]
fn the_template_deploys_once_per_seller() {
    let _ = emulator::endpoint();
    let name = relay_tests::unique_name("erp");
    let mut roles = Vec::new();
    for nip in [A, B] {
        let created = template::deploy_file_to_emulator(
            TEMPLATE,
            &format!("{name}-{nip}"),
            &[
                ("ArchiveBucketName", BUCKET),
                ("SellerNip", nip),
                ("ErpPrincipalArn", "arn:aws:iam::210987654321:role/erp"),
            ],
        );
        let arn = created["outputs"]["ErpRoleArn"].as_str().expect("the role's ARN").to_owned();
        assert!(arn.contains(":role/"), "{arn}");
        assert_eq!(created["outputs"]["SellerNip"], nip);
        roles.push(arn);
    }
    assert_ne!(roles[0], roles[1]);
}
