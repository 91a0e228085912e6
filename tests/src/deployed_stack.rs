//! What `template::deploy_to_emulator` created, as a test reads it: physical ids by logical id,
//! and each function's environment as CloudFormation resolved it (ready for its settings).
//! (`template_on_emulator.rs` has its own copy with the least-privilege checks.)

use std::collections::HashMap;

use serde_json::Value;

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
}
