//! The document store on DynamoDB.
//!
//! One table, two kinds of items under the document's partition key `pk = DOC#{nip}|{kind}|{P_2}`:
//!
//! | sk | attributes |
//! |---|---|
//! | `DOC` | `state`, `state_since` (epoch µs), `version`, `doc` (the record as JSON) |
//! | `H#{epoch µs}#{n}#{random}` | `entry` (one history line as JSON), never changed or deleted |
//!
//! The GSI `by-state` (`state`, `state_since`) is sparse: only `DOC` items carry `state`, so it
//! lists documents by state and age without touching history. TTL (attribute `expires_at`) is
//! for leases and caches only; documents and history never carry it.
//!
//! Every write is conditional: registration on `attribute_not_exists(pk)`, everything else on
//! the version read. The record and its new history lines are written in one transaction.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, Put, TransactWriteItem};
use chrono::{DateTime, Utc};
use relay_domain::ports::{DocumentClaims, DocumentQueries, DocumentRegistry, DocumentUpdates, Registration, StoreError};
use relay_domain::{Change, ClaimPurpose, Document, DocumentKey, DocumentRecord, DocumentState, HistoryEntry, NewDocument};

/// The GSI that lists documents by state and age.
pub const BY_STATE_INDEX: &str = "by-state";
/// The TTL attribute (leases and caches only).
pub const TTL_ATTRIBUTE: &str = "expires_at";
const DOC_SK: &str = "DOC";
/// DynamoDB allows 100 items per transaction; one is the record or its condition check.
const HISTORY_PER_TRANSACTION: usize = 99;

/// A [`relay_domain::ports::DocumentStore`] on one DynamoDB table.
#[derive(Debug, Clone)]
pub struct DynamoDocumentStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

type Item = HashMap<String, AttributeValue>;

fn pk(key: &DocumentKey) -> String {
    format!("DOC#{}", key.storage_id())
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn unavailable<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(op: &str, e: SdkError<E, R>) -> StoreError {
    StoreError::Unavailable(format!("DynamoDB {op}: {}", DisplayErrorContext(&e)))
}

fn is_condition_failure<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    e.as_service_error().and_then(|se| se.code()) == Some("ConditionalCheckFailedException")
}

/// Whether a cancelled transaction failed on the condition of its first item.
fn first_condition_failed<R>(e: &SdkError<TransactWriteItemsError, R>) -> bool {
    match e.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(t)) => {
            t.cancellation_reasons().first().and_then(|r| r.code()) == Some("ConditionalCheckFailed")
        }
        _ => false,
    }
}

fn doc_item(record: &DocumentRecord) -> Result<Item, StoreError> {
    let json = serde_json::to_string(record).map_err(|e| StoreError::Corrupt {
        id: record.key.storage_id(),
        reason: e.to_string(),
    })?;
    Ok(HashMap::from([
        ("pk".to_owned(), s(pk(&record.key))),
        ("sk".to_owned(), s(DOC_SK)),
        ("state".to_owned(), s(record.state.code())),
        ("state_since".to_owned(), n(record.state_since.timestamp_micros())),
        ("version".to_owned(), n(record.version)),
        ("doc".to_owned(), s(json)),
    ]))
}

fn history_items(key: &DocumentKey, entries: &[HistoryEntry]) -> Result<Vec<Item>, StoreError> {
    let salt: u32 = rand::random();
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let json = serde_json::to_string(entry).map_err(|e| StoreError::Corrupt {
                id: key.storage_id(),
                reason: e.to_string(),
            })?;
            let micros = entry.at.timestamp_micros().max(0);
            Ok(HashMap::from([
                ("pk".to_owned(), s(pk(key))),
                ("sk".to_owned(), s(format!("H#{micros:020}#{i:04}#{salt:08x}"))),
                ("entry".to_owned(), s(json)),
            ]))
        })
        .collect()
}

fn text<'a>(item: &'a Item, name: &str, id: &str) -> Result<&'a str, StoreError> {
    match item.get(name) {
        Some(AttributeValue::S(v)) => Ok(v),
        _ => Err(StoreError::Corrupt {
            id: id.to_owned(),
            reason: format!("attribute {name} is missing or not a string"),
        }),
    }
}

fn record_from(item: &Item) -> Result<DocumentRecord, StoreError> {
    let id = item.get("pk").and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
    serde_json::from_str(text(item, "doc", &id)?).map_err(|e| StoreError::Corrupt { id, reason: e.to_string() })
}

fn entry_from(item: &Item) -> Result<HistoryEntry, StoreError> {
    let id = item.get("pk").and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
    serde_json::from_str(text(item, "entry", &id)?).map_err(|e| StoreError::Corrupt { id, reason: e.to_string() })
}

fn put_item(table: &str, item: Item) -> Result<TransactWriteItem, StoreError> {
    let put = Put::builder()
        .table_name(table)
        .set_item(Some(item))
        .build()
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    Ok(TransactWriteItem::builder().put(put).build())
}

impl DynamoDocumentStore {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        DynamoDocumentStore {
            client,
            table: table.into(),
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    async fn get_record(&self, key: &DocumentKey) -> Result<Option<DocumentRecord>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(pk(key)))
            .key("sk", s(DOC_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("GetItem", e))?;
        out.item().map(record_from).transpose()
    }

    /// Writes `record` if the stored version is still `expected`, with `history` in the same transaction.
    async fn write_if_version(&self, expected: u64, record: &DocumentRecord, history: &[HistoryEntry]) -> Result<(), StoreError> {
        let id = record.key.storage_id();
        let doc = Put::builder()
            .table_name(&self.table)
            .set_item(Some(doc_item(record)?))
            .condition_expression("#v = :expected")
            .expression_attribute_names("#v", "version")
            .expression_attribute_values(":expected", n(expected))
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let items = history_items(&record.key, history)?;
        let (first, rest) = items.split_at(items.len().min(HISTORY_PER_TRANSACTION));
        let mut tx = vec![TransactWriteItem::builder().put(doc).build()];
        for item in first {
            tx.push(put_item(&self.table, item.clone())?);
        }
        match self.client.transact_write_items().set_transact_items(Some(tx)).send().await {
            Ok(_) => {}
            Err(e) if first_condition_failed(&e) => return Err(StoreError::VersionConflict { id, expected }),
            Err(e) => return Err(unavailable("TransactWriteItems", e)),
        }
        self.append_items(&record.key, rest.to_vec()).await
    }

    /// Appends history items in transactions that each check the document exists.
    async fn append_items(&self, key: &DocumentKey, items: Vec<Item>) -> Result<(), StoreError> {
        for chunk in items.chunks(HISTORY_PER_TRANSACTION) {
            let check = ConditionCheck::builder()
                .table_name(&self.table)
                .key("pk", s(pk(key)))
                .key("sk", s(DOC_SK))
                .condition_expression("attribute_exists(pk)")
                .build()
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            let mut tx = vec![TransactWriteItem::builder().condition_check(check).build()];
            for item in chunk {
                tx.push(put_item(&self.table, item.clone())?);
            }
            match self.client.transact_write_items().set_transact_items(Some(tx)).send().await {
                Ok(_) => {}
                Err(e) if first_condition_failed(&e) => return Err(StoreError::NotFound(key.storage_id())),
                Err(e) => return Err(unavailable("TransactWriteItems", e)),
            }
        }
        Ok(())
    }
}

#[async_trait]
impl DocumentRegistry for DynamoDocumentStore {
    async fn register(&self, new: NewDocument, now: DateTime<Utc>) -> Result<Registration, StoreError> {
        let key = new.key.clone();
        let applied = DocumentRecord::register(new, now);
        let doc = Put::builder()
            .table_name(&self.table)
            .set_item(Some(doc_item(&applied.record)?))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let items = history_items(&key, &applied.history)?;
        let (first, rest) = items.split_at(items.len().min(HISTORY_PER_TRANSACTION));
        let mut tx = vec![TransactWriteItem::builder().put(doc).build()];
        for item in first {
            tx.push(put_item(&self.table, item.clone())?);
        }
        match self.client.transact_write_items().set_transact_items(Some(tx)).send().await {
            Ok(_) => {
                self.append_items(&key, rest.to_vec()).await?;
                Ok(Registration::Created(applied.record))
            }
            Err(e) if first_condition_failed(&e) => {
                // Someone registered this identity first: report what is stored.
                let existing = self.get(&key).await?.ok_or_else(|| StoreError::NotFound(key.storage_id()))?;
                Ok(Registration::Existing(existing))
            }
            Err(e) => Err(unavailable("TransactWriteItems", e)),
        }
    }

    async fn get(&self, key: &DocumentKey) -> Result<Option<Document>, StoreError> {
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(pk(key)))
            .consistent_read(true)
            .into_paginator()
            .items()
            .send();
        let mut record = None;
        let mut history = Vec::new();
        while let Some(item) = pages.next().await {
            let item = item.map_err(|e| unavailable("Query", e))?;
            match item.get("sk") {
                Some(AttributeValue::S(sk)) if sk == DOC_SK => record = Some(record_from(&item)?),
                Some(AttributeValue::S(sk)) if sk.starts_with("H#") => history.push(entry_from(&item)?),
                _ => {}
            }
        }
        Ok(record.map(|record| Document { record, history }))
    }
}

#[async_trait]
impl DocumentClaims for DynamoDocumentStore {
    async fn claim(
        &self,
        key: &DocumentKey,
        purpose: ClaimPurpose,
        owner: &str,
        now: DateTime<Utc>,
        lease_for: Duration,
    ) -> Result<DocumentRecord, StoreError> {
        let current = self.get_record(key).await?.ok_or_else(|| StoreError::NotFound(key.storage_id()))?;
        self.claim_as_read(&current, purpose, owner, now, lease_for).await
    }

    async fn claim_as_read(
        &self,
        current: &DocumentRecord,
        purpose: ClaimPurpose,
        owner: &str,
        now: DateTime<Utc>,
        lease_for: Duration,
    ) -> Result<DocumentRecord, StoreError> {
        let key = &current.key;
        let claimed = current.claim(purpose, owner, now, lease_for)?;
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(doc_item(&claimed)?))
            .condition_expression("#v = :expected")
            .expression_attribute_names("#v", "version")
            .expression_attribute_values(":expected", n(current.version))
            .send()
            .await;
        match result {
            Ok(_) => Ok(claimed),
            Err(e) if is_condition_failure(&e) => Err(StoreError::VersionConflict {
                id: key.storage_id(),
                expected: current.version,
            }),
            Err(e) => Err(unavailable("PutItem", e)),
        }
    }
}

#[async_trait]
impl DocumentUpdates for DynamoDocumentStore {
    async fn transition(&self, current: &DocumentRecord, change: Change, now: DateTime<Utc>) -> Result<DocumentRecord, StoreError> {
        let applied = current.apply(change, now)?;
        self.write_if_version(current.version, &applied.record, &applied.history).await?;
        Ok(applied.record)
    }

    async fn append_history(&self, key: &DocumentKey, entries: Vec<HistoryEntry>) -> Result<(), StoreError> {
        let items = history_items(key, &entries)?;
        self.append_items(key, items).await
    }
}

impl DynamoDocumentStore {
    /// A query on the `by-state` index for one state (`#s = :s` bound; the caller adds the
    /// condition on `state_since`).
    fn by_state(&self, state: DocumentState) -> aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder {
        self.client
            .query()
            .table_name(&self.table)
            .index_name(BY_STATE_INDEX)
            .expression_attribute_names("#s", "state")
            .expression_attribute_values(":s", s(state.code()))
    }

    /// Up to `limit` records from `query`, page by page (at most 1,000 items a page).
    async fn query_records(
        &self,
        query: aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder,
        limit: usize,
    ) -> Result<Vec<DocumentRecord>, StoreError> {
        let mut found = Vec::new();
        let mut start: Option<Item> = None;
        while found.len() < limit {
            let page = (limit - found.len()).min(1000) as i32;
            let out = query
                .clone()
                .limit(page)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| unavailable("Query by-state", e))?;
            for item in out.items() {
                found.push(record_from(item)?);
            }
            match out.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        found.truncate(limit);
        Ok(found)
    }
}

#[async_trait]
impl DocumentQueries for DynamoDocumentStore {
    async fn list_by_state(
        &self,
        state: DocumentState,
        older_than: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<DocumentRecord>, StoreError> {
        let query = self
            .by_state(state)
            .key_condition_expression("#s = :s AND state_since < :t")
            .expression_attribute_values(":t", n(older_than.timestamp_micros()));
        self.query_records(query, limit).await
    }

    async fn list_by_state_between(
        &self,
        state: DocumentState,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<DocumentRecord>, StoreError> {
        // BETWEEN is inclusive at both ends; the window is [since, until).
        let last = until.timestamp_micros() - 1;
        if last < since.timestamp_micros() {
            return Ok(Vec::new());
        }
        let query = self
            .by_state(state)
            .key_condition_expression("#s = :s AND state_since BETWEEN :a AND :b")
            .expression_attribute_values(":a", n(since.timestamp_micros()))
            .expression_attribute_values(":b", n(last))
            .scan_index_forward(false);
        self.query_records(query, limit).await
    }

    async fn count_by_state(&self, state: DocumentState) -> Result<u64, StoreError> {
        // Select COUNT still reads the index partition (paid per KB read), but returns no items.
        let mut total = 0u64;
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(BY_STATE_INDEX)
                .key_condition_expression("#s = :s")
                .expression_attribute_names("#s", "state")
                .expression_attribute_values(":s", s(state.code()))
                .select(aws_sdk_dynamodb::types::Select::Count)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| unavailable("Query by-state (count)", e))?;
            total += out.count().max(0) as u64;
            match out.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => return Ok(total),
            }
        }
    }
}
