use lambda_runtime::{service_fn, Error, LambdaEvent};
use relay_aws::settings::{ProcessEnv, SweeperSettings};

#[tokio::main]
async fn main() -> Result<(), Error> {
    relay_lambda::init_logging();
    // Fail fast at cold start, naming the missing variable.
    let settings = SweeperSettings::from_env(&ProcessEnv)?;
    let deps = relay_fn_sweeper::SweeperDeps::from_settings(&settings).await;
    let availability = relay_fn_sweeper::AvailabilityDeps::from_settings(&settings).await?;
    let (deps, availability) = (&deps, &availability);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| async move {
        let now = chrono::Utc::now();
        let report = relay_fn_sweeper::handle(event.payload, deps, now).await?;
        let mut answer = serde_json::to_value(report)?;
        // The availability poll rides along; its failure is logged, it does not fail the sweep.
        if let Some(a) = availability {
            let polled = match relay_fn_sweeper::poll_availability(a, now).await {
                Ok(p) => serde_json::to_value(p)?,
                Err(e) => {
                    tracing::error!(error = %e, "the availability poll failed");
                    serde_json::json!({"error": e})
                }
            };
            answer["availability"] = polled;
        }
        Ok::<_, Error>(answer)
    }))
    .await
}
