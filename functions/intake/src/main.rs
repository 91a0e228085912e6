use lambda_runtime::{service_fn, Error, LambdaEvent};
use relay_aws::settings::{IntakeSettings, ProcessEnv};

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt().json().with_current_span(false).with_target(false).init();
    // Fail fast at cold start, naming the missing variable.
    let settings = IntakeSettings::from_env(&ProcessEnv)?;
    let deps = relay_fn_intake::IntakeDeps::new(&settings).await;
    let deps = &deps;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<aws_lambda_events::sqs::SqsEvent>| async move {
        Ok::<_, Error>(relay_fn_intake::handle(event.payload, deps).await)
    }))
    .await
}
