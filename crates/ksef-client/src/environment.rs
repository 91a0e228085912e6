//! Where KSeF lives: the three official environments or any base URL (the simulator).

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Environment {
    Test,
    Demo,
    Prod,
    /// Any API root, e.g. the simulator's `http://127.0.0.1:PORT/v2`.
    Custom(String),
}

impl Environment {
    /// The API root, without a trailing slash, including the `/v2` prefix.
    pub fn base_url(&self) -> &str {
        match self {
            Environment::Test => "https://api-test.ksef.mf.gov.pl/v2",
            Environment::Demo => "https://api-demo.ksef.mf.gov.pl/v2",
            Environment::Prod => "https://api.ksef.mf.gov.pl/v2",
            Environment::Custom(u) => u.trim_end_matches('/'),
        }
    }

    /// `test`, `demo`, `prod`, or a URL.
    pub fn parse(s: &str) -> Result<Environment, String> {
        match s.to_ascii_lowercase().as_str() {
            "test" | "te" => Ok(Environment::Test),
            "demo" | "tr" => Ok(Environment::Demo),
            "prod" | "prd" | "production" => Ok(Environment::Prod),
            _ if s.starts_with("http://") || s.starts_with("https://") => {
                url::Url::parse(s).map_err(|e| format!("{s:?} is not a URL: {e}"))?;
                Ok(Environment::Custom(s.trim_end_matches('/').to_owned()))
            }
            _ => Err(format!("unknown KSeF environment {s:?}: use test, demo, prod or an https:// URL")),
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Environment::Test => f.write_str("TEST"),
            Environment::Demo => f.write_str("DEMO"),
            Environment::Prod => f.write_str("PROD"),
            Environment::Custom(u) => f.write_str(u),
        }
    }
}
