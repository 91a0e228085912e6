//! Building the AWS SDK clients once per cold start, pointed at AWS or at the local emulator.

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::Credentials;

use crate::settings::AwsSettings;

/// The SDK clients a function may use, built once in `main` and shared.
#[derive(Debug, Clone)]
pub struct AwsClients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub s3: aws_sdk_s3::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
    pub sns: aws_sdk_sns::Client,
    pub kms: aws_sdk_kms::Client,
}

/// The shared SDK configuration. With an endpoint override (the emulator) the credentials are
/// static (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` if set, else `test`/`test`), so nothing
/// probes instance metadata or the network for real credentials.
pub async fn sdk_config(aws: &AwsSettings) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).region(Region::new(aws.region.clone()));
    if let Some(endpoint) = &aws.endpoint_url {
        let key = std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_else(|_| "test".into());
        let secret = std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|_| "test".into());
        loader = loader
            .endpoint_url(endpoint)
            .credentials_provider(Credentials::new(key, secret, None, None, "ksef-relay-emulator"));
    }
    loader.load().await
}

impl AwsClients {
    pub async fn new(aws: &AwsSettings) -> Self {
        Self::from_config(&sdk_config(aws).await, aws.endpoint_url.is_some())
    }

    /// `path_style` is needed by emulators, which do not resolve `bucket.host` names.
    pub fn from_config(conf: &SdkConfig, path_style: bool) -> Self {
        let s3_conf = aws_sdk_s3::config::Builder::from(conf).force_path_style(path_style).build();
        AwsClients {
            dynamodb: aws_sdk_dynamodb::Client::new(conf),
            sqs: aws_sdk_sqs::Client::new(conf),
            s3: aws_sdk_s3::Client::from_conf(s3_conf),
            secrets: aws_sdk_secretsmanager::Client::new(conf),
            sns: aws_sdk_sns::Client::new(conf),
            kms: aws_sdk_kms::Client::new(conf),
        }
    }
}
