//! The shared cache on DynamoDB, in the documents table: items `pk = CACHE#{name}`, `sk = CACHE`
//! with `value`, `version`, `expires_at` (epoch seconds: the table's TTL attribute, so DynamoDB
//! cleans up eventually) and `expires_at_us` (what reads and conditions compare, since TTL
//! deletion lags by up to two days). They carry no `state`, so the `by-state` index skips them.

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use chrono::{DateTime, Utc};
use relay_domain::ports::{CacheEntry, Expect, SharedCache, StoreError};

use crate::dynamodb_store::TTL_ATTRIBUTE;

/// A [`SharedCache`] in the documents table.
#[derive(Debug, Clone)]
pub struct DynamoSharedCache {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

fn pk(name: &str) -> AttributeValue {
    AttributeValue::S(format!("CACHE#{name}"))
}

fn sk() -> AttributeValue {
    AttributeValue::S("CACHE".into())
}

fn num(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn entry_from(name: &str, item: &std::collections::HashMap<String, AttributeValue>) -> Result<CacheEntry, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt {
        id: format!("CACHE#{name}"),
        reason: format!("attribute {what} missing or malformed"),
    };
    let value = item
        .get("value")
        .and_then(|v| v.as_s().ok())
        .ok_or_else(|| corrupt("value"))?
        .clone();
    let version = item
        .get("version")
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| corrupt("version"))?;
    let us: i64 = item
        .get("expires_at_us")
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| corrupt("expires_at_us"))?;
    let expires_at = DateTime::<Utc>::from_timestamp_micros(us).ok_or_else(|| corrupt("expires_at_us"))?;
    Ok(CacheEntry {
        value,
        version,
        expires_at,
    })
}

impl DynamoSharedCache {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        DynamoSharedCache {
            client,
            table: table.into(),
        }
    }
}

#[async_trait]
impl SharedCache for DynamoSharedCache {
    async fn get(&self, name: &str, now: DateTime<Utc>) -> Result<Option<CacheEntry>, StoreError> {
        // A Query on the item's full key, not GetItem: the report function reads the recorded
        // credential facts with the Query it is granted for documents, and no more.
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND sk = :sk")
            .expression_attribute_values(":pk", pk(name))
            .expression_attribute_values(":sk", sk())
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::Unavailable(format!("DynamoDB Query: {}", DisplayErrorContext(&e))))?;
        match out.items().first() {
            Some(item) => Ok(Some(entry_from(name, item)?).filter(|e| e.expires_at > now)),
            None => Ok(None),
        }
    }

    async fn put(
        &self,
        name: &str,
        value: String,
        expires_at: DateTime<Utc>,
        expect: Expect,
        now: DateTime<Utc>,
    ) -> Result<CacheEntry, StoreError> {
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", pk(name))
            .key("sk", sk())
            .update_expression("SET #val = :val, #ttl = :ttl, expires_at_us = :exp, #ver = if_not_exists(#ver, :zero) + :one")
            .expression_attribute_names("#val", "value")
            .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
            .expression_attribute_names("#ver", "version")
            .expression_attribute_values(":val", AttributeValue::S(value))
            .expression_attribute_values(":ttl", num(expires_at.timestamp()))
            .expression_attribute_values(":exp", num(expires_at.timestamp_micros()))
            .expression_attribute_values(":zero", num(0))
            .expression_attribute_values(":one", num(1))
            .return_values(ReturnValue::AllNew);
        let expected = match expect {
            Expect::Absent => {
                update = update
                    .condition_expression("attribute_not_exists(pk) OR expires_at_us <= :now")
                    .expression_attribute_values(":now", num(now.timestamp_micros()));
                0
            }
            Expect::Version(v) => {
                update = update
                    .condition_expression("#ver = :expected")
                    .expression_attribute_values(":expected", num(v as i64));
                v
            }
        };
        match update.send().await {
            Ok(out) => entry_from(
                name,
                out.attributes().ok_or_else(|| StoreError::Corrupt {
                    id: name.into(),
                    reason: "no attributes returned".into(),
                })?,
            ),
            Err(e) if e.as_service_error().and_then(|s| s.code()) == Some("ConditionalCheckFailedException") => {
                Err(StoreError::VersionConflict {
                    id: name.to_owned(),
                    expected,
                })
            }
            Err(e) => Err(StoreError::Unavailable(format!("DynamoDB UpdateItem: {}", DisplayErrorContext(&e)))),
        }
    }

    async fn remove(&self, name: &str, version: u64) -> Result<(), StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", pk(name))
            .key("sk", sk())
            .condition_expression("#ver = :v")
            .expression_attribute_names("#ver", "version")
            .expression_attribute_values(":v", num(version as i64))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Someone replaced it already: nothing of ours to remove.
            Err(e) if e.as_service_error().and_then(|s| s.code()) == Some("ConditionalCheckFailedException") => Ok(()),
            Err(e) => Err(StoreError::Unavailable(format!("DynamoDB DeleteItem: {}", DisplayErrorContext(&e)))),
        }
    }
}
