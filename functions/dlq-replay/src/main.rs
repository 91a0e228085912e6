use lambda_runtime::{service_fn, Error, LambdaEvent};
use relay_aws::settings::{ProcessEnv, ReplaySettings};

#[tokio::main]
async fn main() -> Result<(), Error> {
    relay_lambda::init_logging();
    // Fail fast at cold start, naming the missing variable.
    let settings = ReplaySettings::from_env(&ProcessEnv)?;
    let deps = relay_fn_dlq_replay::ReplayDeps::from_settings(&settings).await?;
    let deps = &deps;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| async move {
        let answer = relay_fn_dlq_replay::handle(event.payload, deps).await?;
        Ok::<_, Error>(serde_json::to_value(answer)?)
    }))
    .await
}
