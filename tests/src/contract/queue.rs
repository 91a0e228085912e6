//! The queue contract: SQS semantics, including redrive to the DLQ.

use std::time::Duration;

use relay_domain::ports::{OutgoingMessage, Queue, QueueError};
use relay_domain::TraceId;

/// Generates one `#[tokio::test]` per case; `$make` is an async fn taking `max_receive_count`
/// and returning a fresh `(queue, dlq)` pair.
#[macro_export]
macro_rules! queue_contract {
    ($make:path) => {
        mod queue_contract {
            use super::*;
            $crate::queue_contract!(@cases $make;
                a_sent_message_is_received_with_its_trace_id,
                a_received_message_is_hidden_until_its_visibility_ends,
                change_visibility_to_zero_makes_it_receivable_again,
                a_deleted_message_is_gone,
                a_delayed_message_waits,
                a_message_received_more_than_max_receive_count_times_lands_in_the_dlq,
                requests_sqs_refuses_are_refused,
            );
        }
    };
    (@cases $make:path; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::contract::queue::$case(|n| $make(n)).await;
            }
        )+
    };
}

const NO_WAIT: Duration = Duration::ZERO;

pub async fn a_sent_message_is_received_with_its_trace_id<Q: Queue, F: std::future::Future<Output = (Q, Q)>>(make: impl Fn(u32) -> F) {
    let (q, _dlq) = make(5).await;
    let trace = TraceId::generate();
    let id = q
        .send(
            OutgoingMessage::new(r#"{"doc":"5265877635|VAT|FV/1"}"#)
                .with_trace_id(&trace)
                .with_attribute("kind", "send"),
        )
        .await
        .unwrap();
    assert!(!id.is_empty());
    let got = q.receive(10, Duration::from_secs(30), Duration::from_secs(1)).await.unwrap();
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert_eq!(m.message_id, id);
    assert_eq!(m.body, r#"{"doc":"5265877635|VAT|FV/1"}"#);
    assert_eq!(m.trace_id(), Some(trace));
    assert_eq!(m.attributes.get("kind").map(String::as_str), Some("send"));
    assert_eq!(m.receive_count, 1);
    assert!((chrono::Utc::now() - m.sent_at).num_seconds().abs() < 60, "sent_at {}", m.sent_at);
}

pub async fn a_received_message_is_hidden_until_its_visibility_ends<Q: Queue, F: std::future::Future<Output = (Q, Q)>>(
    make: impl Fn(u32) -> F,
) {
    let (q, _dlq) = make(5).await;
    q.send(OutgoingMessage::new("one")).await.unwrap();
    let first = q.receive(1, Duration::from_secs(1), NO_WAIT).await.unwrap();
    assert_eq!(first.len(), 1);
    let stats = q.stats().await.unwrap();
    assert_eq!((stats.visible, stats.in_flight), (0, 1));
    assert!(
        q.receive(1, Duration::from_secs(1), NO_WAIT).await.unwrap().is_empty(),
        "hidden while in flight"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let again = q.receive(1, Duration::from_secs(30), NO_WAIT).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].receive_count, 2);
    assert_eq!(again[0].message_id, first[0].message_id);
}

pub async fn change_visibility_to_zero_makes_it_receivable_again<Q: Queue, F: std::future::Future<Output = (Q, Q)>>(
    make: impl Fn(u32) -> F,
) {
    let (q, _dlq) = make(5).await;
    q.send(OutgoingMessage::new("back off me")).await.unwrap();
    let m = q.receive(1, Duration::from_secs(600), NO_WAIT).await.unwrap().remove(0);
    q.change_visibility(&m.receipt, Duration::ZERO).await.unwrap();
    let again = q.receive(1, Duration::from_secs(600), NO_WAIT).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].receive_count, 2);
    // And hidden for longer than the receive asked: the backoff path.
    q.change_visibility(&again[0].receipt, Duration::from_secs(900)).await.unwrap();
    assert!(q.receive(1, Duration::from_secs(1), NO_WAIT).await.unwrap().is_empty());
    assert_eq!(q.stats().await.unwrap().in_flight, 1);
}

pub async fn a_deleted_message_is_gone<Q: Queue, F: std::future::Future<Output = (Q, Q)>>(make: impl Fn(u32) -> F) {
    let (q, _dlq) = make(5).await;
    q.send(OutgoingMessage::new("a")).await.unwrap();
    q.send(OutgoingMessage::new("b")).await.unwrap();
    assert_eq!(q.stats().await.unwrap().visible, 2);
    let got = q.receive(10, Duration::from_secs(1), Duration::from_secs(1)).await.unwrap();
    let mut got = if got.len() < 2 {
        // SQS may return fewer than asked on one call; collect the rest.
        let mut all = got;
        all.extend(q.receive(10, Duration::from_secs(1), Duration::from_secs(1)).await.unwrap());
        all
    } else {
        got
    };
    got.sort_by(|a, b| a.body.cmp(&b.body));
    assert_eq!(got.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(), vec!["a", "b"]);
    for m in &got {
        q.delete(&m.receipt).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(q.receive(10, Duration::from_secs(1), NO_WAIT).await.unwrap().is_empty());
    assert_eq!(q.stats().await.unwrap().total(), 0);
}

pub async fn a_delayed_message_waits<Q: Queue, F: std::future::Future<Output = (Q, Q)>>(make: impl Fn(u32) -> F) {
    let (q, _dlq) = make(5).await;
    q.send(OutgoingMessage::new("later").delayed(Duration::from_secs(2))).await.unwrap();
    assert!(q.receive(1, Duration::from_secs(30), NO_WAIT).await.unwrap().is_empty());
    let stats = q.stats().await.unwrap();
    assert_eq!((stats.visible, stats.delayed), (0, 1));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let got = q.receive(1, Duration::from_secs(30), NO_WAIT).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, "later");
}

pub async fn a_message_received_more_than_max_receive_count_times_lands_in_the_dlq<Q: Queue, F: std::future::Future<Output = (Q, Q)>>(
    make: impl Fn(u32) -> F,
) {
    let (q, dlq) = make(2).await;
    let trace = TraceId::generate();
    q.send(OutgoingMessage::new("poison").with_trace_id(&trace)).await.unwrap();
    for n in 1..=2 {
        let got = q.receive(1, Duration::from_secs(1), NO_WAIT).await.unwrap();
        assert_eq!(got.len(), 1, "receive {n}");
        assert_eq!(got[0].receive_count, n);
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    // The third receive finds it over maxReceiveCount: SQS moves it instead of delivering it.
    assert!(q.receive(1, Duration::from_secs(1), NO_WAIT).await.unwrap().is_empty());
    assert_eq!(q.stats().await.unwrap().total(), 0);
    let dead = dlq.receive(1, Duration::from_secs(30), Duration::from_secs(1)).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body, "poison");
    assert_eq!(dead[0].trace_id(), Some(trace), "the trace id survives the redrive");
    assert!(dead[0].receive_count >= 3, "receive count {}", dead[0].receive_count);
}

pub async fn requests_sqs_refuses_are_refused<Q: Queue, F: std::future::Future<Output = (Q, Q)>>(make: impl Fn(u32) -> F) {
    let (q, _dlq) = make(5).await;
    let too_late = q.send(OutgoingMessage::new("x").delayed(Duration::from_secs(901))).await;
    assert!(matches!(too_late, Err(QueueError::Invalid(_))), "{too_late:?}");
    assert!(matches!(q.send(OutgoingMessage::new("")).await, Err(QueueError::Invalid(_))));
    assert!(matches!(
        q.receive(11, Duration::from_secs(1), NO_WAIT).await,
        Err(QueueError::Invalid(_))
    ));
    assert!(matches!(
        q.receive(1, Duration::from_secs(12 * 3600 + 1), NO_WAIT).await,
        Err(QueueError::Invalid(_))
    ));
    assert_eq!(q.stats().await.unwrap().total(), 0, "nothing refused was queued");
}
