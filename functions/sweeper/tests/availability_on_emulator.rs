//! The sweeper's availability poll on the AWS emulator, against the simulator's Latarnia: every
//! message version archived to S3 once (a repeated poll writes nothing; a republished version
//! is archived beside the first), and the decided state in the table's shared cache, where a
//! send function's KSeF contexts read it and hold.

use std::sync::Arc;

use chrono::Utc;
use ksef_client::{Environment, LatarniaClient};
use ksef_sim::latarnia::message;
use relay_aws::{provision, DynamoSharedCache, S3Archive};
use relay_domain::ports::Archive;
use relay_domain::AvailabilityState;
use relay_fn_sweeper::{poll_availability, AvailabilityDeps, AVAILABILITY_TIMEOUT};
use relay_pipeline::availability::current;
use relay_pipeline::sessions::KsefContexts;
use relay_tests::emulator;

#[tokio::test]
async fn each_message_version_is_archived_once_and_the_state_is_shared_through_the_table() {
    let name = relay_tests::unique_name("avail");
    let c = emulator::clients().await;
    provision::create_documents_table(&c.dynamodb, &name).await.unwrap();
    provision::create_bucket(&c.s3, &name, emulator::REGION).await.unwrap();
    let sim = ksef_sim::start(ksef_sim::SimConfig::default()).await;
    let environment = Environment::Custom(sim.api_url());
    let deps = AvailabilityDeps {
        latarnia: LatarniaClient::for_environment(&environment, AVAILABILITY_TIMEOUT),
        environment: environment.clone(),
        cache: DynamoSharedCache::new(c.dynamodb.clone(), &name),
        archive: S3Archive::new(c.s3.clone(), &name),
    };

    let start = Utc::now() - chrono::Duration::minutes(20);
    sim.latarnia().declare_failure("K/2026/AWR/05", "E-5", start);
    let first = poll_availability(&deps, Utc::now()).await.unwrap();
    assert_eq!(first.availability.state, AvailabilityState::Failure);
    assert_eq!(first.archived, vec!["latarnia/CUSTOM/K_2F2026_2FAWR_2F05/v1.json".to_owned()]);
    let again = poll_availability(&deps, Utc::now()).await.unwrap();
    assert!(again.archived.is_empty(), "nothing archived twice: {:?}", again.archived);

    sim.latarnia()
        .publish(message("K/2026/AWR/05", "E-5", "FAILURE", "FAILURE_START", start, None, 2));
    let third = poll_availability(&deps, Utc::now()).await.unwrap();
    assert_eq!(third.archived, vec!["latarnia/CUSTOM/K_2F2026_2FAWR_2F05/v2.json".to_owned()]);
    let v1 = deps
        .archive
        .get("latarnia/CUSTOM/K_2F2026_2FAWR_2F05/v1.json")
        .await
        .unwrap()
        .unwrap();
    let v1: serde_json::Value = serde_json::from_slice(&v1.bytes).unwrap();
    assert_eq!((v1["id"].as_str(), v1["version"].as_u64()), (Some("K/2026/AWR/05"), Some(1)));

    // Shared through the table: another instance (a send function) reads it and holds.
    let shared = current(&deps.cache, "CUSTOM", Utc::now()).await.unwrap().unwrap();
    assert_eq!((shared.state, shared.since), (AvailabilityState::Failure, start));
    let send_side = KsefContexts::new()
        .with_shared_cache(Arc::new(DynamoSharedCache::new(c.dynamodb.clone(), &name)))
        .with_availability(&environment);
    assert!(send_side.availability_hold(Utc::now()).await.is_some());

    sim.latarnia().end_failure("K/2026/AWR/06", "E-5", start, Utc::now());
    let back = poll_availability(&deps, Utc::now()).await.unwrap();
    assert_eq!(back.availability.state, AvailabilityState::Available);
    assert_eq!(back.archived.len(), 1);
    assert!(send_side.availability_hold(Utc::now()).await.is_none());
}
