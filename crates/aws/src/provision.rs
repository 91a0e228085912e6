//! Creating the relay's resources outside CloudFormation: for the local runner against the
//! emulator and for tests, each with its own names. In AWS the SAM template creates them; this
//! code mirrors its key settings (GSI, TTL attribute, redrive, encryption, public access block).

use std::time::Duration;

use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType, ScalarAttributeType,
    TimeToLiveSpecification,
};
use aws_sdk_sqs::types::QueueAttributeName;

use crate::dynamodb_store::{BY_STATE_INDEX, TTL_ATTRIBUTE};

#[derive(Debug, thiserror::Error)]
#[error("could not create {what}: {message}")]
pub struct ProvisionError {
    pub what: String,
    pub message: String,
}

fn fail(what: impl Into<String>, e: impl std::fmt::Display) -> ProvisionError {
    ProvisionError {
        what: what.into(),
        message: e.to_string(),
    }
}

/// Creates the documents table: `pk`/`sk`, the sparse `by-state` GSI, TTL on `expires_at`.
pub async fn create_documents_table(client: &aws_sdk_dynamodb::Client, table: &str) -> Result<(), ProvisionError> {
    let attr = |name: &str, t: ScalarAttributeType| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(t)
            .build()
            .map_err(|e| fail(table, e))
    };
    let key = |name: &str, t: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(t)
            .build()
            .map_err(|e| fail(table, e))
    };
    let gsi = GlobalSecondaryIndex::builder()
        .index_name(BY_STATE_INDEX)
        .key_schema(key("state", KeyType::Hash)?)
        .key_schema(key("state_since", KeyType::Range)?)
        .projection(Projection::builder().projection_type(ProjectionType::All).build())
        .build()
        .map_err(|e| fail(table, e))?;
    client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr("pk", ScalarAttributeType::S)?)
        .attribute_definitions(attr("sk", ScalarAttributeType::S)?)
        .attribute_definitions(attr("state", ScalarAttributeType::S)?)
        .attribute_definitions(attr("state_since", ScalarAttributeType::N)?)
        .key_schema(key("pk", KeyType::Hash)?)
        .key_schema(key("sk", KeyType::Range)?)
        .global_secondary_indexes(gsi)
        .send()
        .await
        .map_err(|e| fail(format!("table {table}"), DisplayErrorContext(&e)))?;
    client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .attribute_name(TTL_ATTRIBUTE)
                .enabled(true)
                .build()
                .map_err(|e| fail(table, e))?,
        )
        .send()
        .await
        .map_err(|e| fail(format!("TTL on {table}"), DisplayErrorContext(&e)))?;
    Ok(())
}

/// A queue and its dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuePair {
    pub url: String,
    pub dlq_url: String,
}

/// Creates `name` and `name-dlq` with a redrive policy after `max_receive_count` receives.
/// The DLQ keeps messages 14 days, longer than the source queue's 4, as SQS requires for
/// standard queues (a message keeps its first enqueue time in the DLQ).
pub async fn create_queue_with_dlq(
    client: &aws_sdk_sqs::Client,
    name: &str,
    max_receive_count: u32,
    visibility: Duration,
) -> Result<QueuePair, ProvisionError> {
    let dlq_name = format!("{name}-dlq");
    let dlq = client
        .create_queue()
        .queue_name(&dlq_name)
        .attributes(QueueAttributeName::MessageRetentionPeriod, (14 * 24 * 3600).to_string())
        .attributes(QueueAttributeName::SqsManagedSseEnabled, "true")
        .send()
        .await
        .map_err(|e| fail(format!("queue {dlq_name}"), aws_sdk_sqs::error::DisplayErrorContext(&e)))?;
    let dlq_url = dlq.queue_url().unwrap_or_default().to_owned();
    let attrs = client
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| fail(format!("ARN of {dlq_name}"), aws_sdk_sqs::error::DisplayErrorContext(&e)))?;
    let dlq_arn = attrs
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .ok_or_else(|| fail(&dlq_name, "no QueueArn"))?;
    let redrive = serde_json::json!({ "deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count }).to_string();
    let main = client
        .create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::RedrivePolicy, redrive)
        .attributes(QueueAttributeName::VisibilityTimeout, visibility.as_secs().to_string())
        .attributes(QueueAttributeName::MessageRetentionPeriod, (4 * 24 * 3600).to_string())
        .attributes(QueueAttributeName::SqsManagedSseEnabled, "true")
        .send()
        .await
        .map_err(|e| fail(format!("queue {name}"), aws_sdk_sqs::error::DisplayErrorContext(&e)))?;
    Ok(QueuePair {
        url: main.queue_url().unwrap_or_default().to_owned(),
        dlq_url,
    })
}

/// Creates a private, encrypted, versioned bucket.
pub async fn create_bucket(client: &aws_sdk_s3::Client, bucket: &str, region: &str) -> Result<(), ProvisionError> {
    use aws_sdk_s3::types::{
        BucketLocationConstraint, BucketVersioningStatus, CreateBucketConfiguration, PublicAccessBlockConfiguration, ServerSideEncryption,
        ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration, ServerSideEncryptionRule, VersioningConfiguration,
    };
    let de = |e: &dyn std::fmt::Display| e.to_string();
    let mut create = client.create_bucket().bucket(bucket);
    if region != "us-east-1" {
        create = create.create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(region))
                .build(),
        );
    }
    create
        .send()
        .await
        .map_err(|e| fail(format!("bucket {bucket}"), de(&aws_sdk_s3::error::DisplayErrorContext(&e))))?;
    client
        .put_public_access_block()
        .bucket(bucket)
        .public_access_block_configuration(
            PublicAccessBlockConfiguration::builder()
                .block_public_acls(true)
                .block_public_policy(true)
                .ignore_public_acls(true)
                .restrict_public_buckets(true)
                .build(),
        )
        .send()
        .await
        .map_err(|e| {
            fail(
                format!("public access block on {bucket}"),
                de(&aws_sdk_s3::error::DisplayErrorContext(&e)),
            )
        })?;
    let sse = ServerSideEncryptionByDefault::builder()
        .sse_algorithm(ServerSideEncryption::Aes256)
        .build()
        .map_err(|e| fail(bucket, e))?;
    client
        .put_bucket_encryption()
        .bucket(bucket)
        .server_side_encryption_configuration(
            ServerSideEncryptionConfiguration::builder()
                .rules(
                    ServerSideEncryptionRule::builder()
                        .apply_server_side_encryption_by_default(sse)
                        .build(),
                )
                .build()
                .map_err(|e| fail(bucket, e))?,
        )
        .send()
        .await
        .map_err(|e| fail(format!("encryption on {bucket}"), de(&aws_sdk_s3::error::DisplayErrorContext(&e))))?;
    client
        .put_bucket_versioning()
        .bucket(bucket)
        .versioning_configuration(VersioningConfiguration::builder().status(BucketVersioningStatus::Enabled).build())
        .send()
        .await
        .map_err(|e| fail(format!("versioning on {bucket}"), de(&aws_sdk_s3::error::DisplayErrorContext(&e))))?;
    Ok(())
}

/// Sends S3 ObjectCreated notifications for keys under `prefix` to the queue at `queue_url`, as
/// the SAM template wires `inbox/` to the intake queue.
pub async fn notify_queue_on_create(
    s3: &aws_sdk_s3::Client,
    sqs: &aws_sdk_sqs::Client,
    bucket: &str,
    queue_url: &str,
    prefix: &str,
) -> Result<(), ProvisionError> {
    use aws_sdk_s3::types::{
        Event, FilterRule, FilterRuleName, NotificationConfiguration, NotificationConfigurationFilter, QueueConfiguration, S3KeyFilter,
    };
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| fail(format!("ARN of {queue_url}"), aws_sdk_sqs::error::DisplayErrorContext(&e)))?;
    let arn = attrs
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .ok_or_else(|| fail(queue_url, "no QueueArn"))?;
    let filter = NotificationConfigurationFilter::builder()
        .key(
            S3KeyFilter::builder()
                .filter_rules(FilterRule::builder().name(FilterRuleName::Prefix).value(prefix).build())
                .build(),
        )
        .build();
    let config = QueueConfiguration::builder()
        .queue_arn(arn)
        .events(Event::from("s3:ObjectCreated:*"))
        .filter(filter)
        .build()
        .map_err(|e| fail(bucket, e))?;
    s3.put_bucket_notification_configuration()
        .bucket(bucket)
        .notification_configuration(NotificationConfiguration::builder().queue_configurations(config).build())
        .send()
        .await
        .map_err(|e| fail(format!("notifications on {bucket}"), aws_sdk_s3::error::DisplayErrorContext(&e)))?;
    Ok(())
}

/// Creates an SNS topic (the alarm topic in tests and local runs); returns its ARN.
pub async fn create_topic(client: &aws_sdk_sns::Client, name: &str) -> Result<String, ProvisionError> {
    let out = client
        .create_topic()
        .name(name)
        .send()
        .await
        .map_err(|e| fail(format!("topic {name}"), aws_sdk_sns::error::DisplayErrorContext(&e).to_string()))?;
    out.topic_arn()
        .map(str::to_owned)
        .ok_or_else(|| fail(format!("topic {name}"), "no ARN in the answer"))
}
