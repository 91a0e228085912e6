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

    /// The host of the environment's public verification pages, which the QR codes link to
    /// (KOD I and KOD II, API-NOTES §1 and §10): `qr-test`, `qr-demo` or `qr.ksef.mf.gov.pl`.
    /// A custom API root that is one of the official API hosts (a proxy path kept) gets that
    /// environment's; any other (the simulator) gets TEST's: the simulator stands for TEST, and
    /// its invoices exist in no real KSeF, so their codes verify nowhere.
    pub fn qr_host(&self) -> &'static str {
        const TEST: &str = "qr-test.ksef.mf.gov.pl";
        const DEMO: &str = "qr-demo.ksef.mf.gov.pl";
        const PROD: &str = "qr.ksef.mf.gov.pl";
        match self {
            Environment::Test => TEST,
            Environment::Demo => DEMO,
            Environment::Prod => PROD,
            Environment::Custom(u) => match url::Url::parse(u).ok().as_ref().and_then(|u| u.host_str()) {
                Some("api.ksef.mf.gov.pl") => PROD,
                Some("api-demo.ksef.mf.gov.pl") => DEMO,
                _ => TEST,
            },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_environment_links_its_codes_to_its_own_verification_host() {
        assert_eq!(Environment::Test.qr_host(), "qr-test.ksef.mf.gov.pl");
        assert_eq!(Environment::Demo.qr_host(), "qr-demo.ksef.mf.gov.pl");
        assert_eq!(Environment::Prod.qr_host(), "qr.ksef.mf.gov.pl");
        let custom = |u: &str| Environment::parse(u).unwrap().qr_host();
        assert_eq!(custom("https://api.ksef.mf.gov.pl/v2"), "qr.ksef.mf.gov.pl");
        assert_eq!(custom("https://api-demo.ksef.mf.gov.pl/v2"), "qr-demo.ksef.mf.gov.pl");
        assert_eq!(custom("http://127.0.0.1:8080/v2"), "qr-test.ksef.mf.gov.pl");
    }
}
