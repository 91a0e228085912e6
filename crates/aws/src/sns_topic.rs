//! The alarm topic (SNS): the report function publishes the weekly summary there, beside the
//! CloudWatch alarms, so the people subscribed to alarms also get the week's story.

/// One SNS topic.
#[derive(Debug, Clone)]
pub struct SnsTopic {
    client: aws_sdk_sns::Client,
    arn: String,
}

impl SnsTopic {
    pub fn new(client: aws_sdk_sns::Client, arn: impl Into<String>) -> Self {
        SnsTopic { client, arn: arn.into() }
    }

    pub fn arn(&self) -> &str {
        &self.arn
    }

    /// Publishes `message` with `subject` (SNS caps subjects at 100 characters: cut to fit).
    /// Returns the message id.
    pub async fn publish(&self, subject: &str, message: &str) -> Result<String, String> {
        let subject: String = subject.chars().filter(|c| !c.is_control()).take(100).collect();
        let out = self
            .client
            .publish()
            .topic_arn(&self.arn)
            .subject(subject)
            .message(message)
            .send()
            .await
            .map_err(|e| format!("SNS Publish to {}: {}", self.arn, aws_sdk_sns::error::DisplayErrorContext(e)))?;
        Ok(out.message_id().unwrap_or_default().to_owned())
    }
}
