//! What `template::deploy_to_emulator` created, as a test reads it: physical ids by logical id,
//! each function's environment as CloudFormation resolved it (ready for its settings), and the
//! run-time least-privilege check of the calls a function made through its recording proxy.

use std::collections::HashMap;

use serde_json::Value;

use crate::recording_proxy::{AwsCall, Resource};
use crate::template;

pub struct DeployedStack {
    pub created: Value,
}

impl DeployedStack {
    pub fn physical(&self, logical: &str) -> String {
        self.created["resources"][logical]["physical_id"]
            .as_str()
            .unwrap_or_else(|| panic!("the stack created no {logical}"))
            .to_owned()
    }

    pub fn function(&self, logical: &str) -> &Value {
        let f = &self.created["functions"][logical];
        assert!(f.is_object(), "the stack created no function {logical}");
        f
    }

    /// The function's environment as CloudFormation resolved it, plus what Lambda adds
    /// (AWS_REGION) and the emulator's endpoint (`endpoint`: the emulator or a recording proxy
    /// before it); KSEF_ENV (TEST from the parameter) is pointed at `ksef`, the simulator.
    pub fn env(&self, logical: &str, ksef: &str, endpoint: &str) -> HashMap<String, String> {
        let mut env: HashMap<String, String> = self.function(logical)["environment"]
            .as_object()
            .unwrap()
            .iter()
            // Lambda environment values are strings; moto hands Number parameters back as numbers.
            .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
            .collect();
        if env.contains_key("KSEF_ENV") {
            env.insert("KSEF_ENV".into(), ksef.into());
        }
        env.insert("AWS_REGION".into(), crate::emulator::REGION.into());
        env.insert(relay_aws::settings::ENDPOINT_VAR.into(), endpoint.into());
        env
    }

    /// A recorded call as the template names resources: `DocumentsTable[/index/NAME]`,
    /// a queue's logical id, `ArchiveBucket/KEY`, `secret:NAME`.
    pub fn canonical(&self, call: &AwsCall) -> String {
        let logical_of = |physical: &str| {
            self.created["resources"]
                .as_object()
                .unwrap()
                .iter()
                .find(|(_, r)| r["physical_id"] == physical)
                .map(|(k, _)| k.clone())
                .unwrap_or_else(|| format!("(not in the stack: {physical})"))
        };
        match &call.resource {
            Resource::Table { name, index: None } => logical_of(name),
            Resource::Table { name, index: Some(i) } => format!("{}/index/{i}", logical_of(name)),
            Resource::Queue { url } => logical_of(url),
            Resource::Object { bucket, key } => format!("{}/{key}", logical_of(bucket)),
            Resource::Bucket { bucket } => logical_of(bucket),
            Resource::Secret { id } => format!("secret:{id}"),
            Resource::Topic { arn } => logical_of(arn),
            // The stack's physical id of a key is its id; the functions name it by ARN.
            Resource::Key { id } => logical_of(id.rsplit('/').next().unwrap_or(id)),
            Resource::Unknown(what) => format!("(unknown: {what})"),
        }
    }

    /// Every call the function made is allowed by its role (the template's parameters
    /// substituted: the secret prefix).
    pub fn assert_allowed(&self, function: &str, calls: &[AwsCall], params: &[(&str, &str)]) {
        assert!(!calls.is_empty(), "{function} made no AWS call through its proxy");
        let grants: Vec<(String, String)> = template::granted(function)
            .into_iter()
            .map(|(a, mut r)| {
                // A grant limited to some partition keys (`Table[P1,P2]`): the proxy sees the
                // table, not the key, so the key limit is template_policies.rs's to check.
                if let Some((table, _)) = r.split_once('[') {
                    r = table.to_owned();
                }
                for (k, v) in params {
                    r = r.replace(&format!("secret:{k}*"), &format!("secret:{v}*"));
                }
                (a, r)
            })
            .collect();
        for call in calls {
            let resource = self.canonical(call);
            assert!(
                grants.iter().any(|(a, r)| *a == call.action && template::covers(r, &resource)),
                "{function} called {} on {resource}, which its role does not allow (grants: {grants:?})",
                call.action
            );
        }
    }
}
