use lambda_runtime::{service_fn, Error, LambdaEvent};
use relay_aws::settings::{ProcessEnv, SweeperSettings};

#[tokio::main]
async fn main() -> Result<(), Error> {
    relay_lambda::init_logging();
    // Fail fast at cold start, naming the missing variable.
    let settings = SweeperSettings::from_env(&ProcessEnv)?;
    let deps = relay_fn_sweeper::SweeperDeps::from_settings(&settings).await;
    let deps = &deps;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| async move {
        let report = relay_fn_sweeper::handle(event.payload, deps, chrono::Utc::now()).await?;
        Ok::<_, Error>(serde_json::to_value(report)?)
    }))
    .await
}
