use lambda_runtime::{service_fn, Error, LambdaEvent};
use relay_aws::settings::{IntakeSettings, ProcessEnv};

#[tokio::main]
async fn main() -> Result<(), Error> {
    // The same set-up as every function (relay_observe::logging::init_lambda): JSON lines with
    // the document's span (trace id, seller, identity), RUST_LOG honoured, and the EMF sink on
    // stdout, without which intake's metrics (InboxUploadsWithoutSeller) were written nowhere.
    relay_observe::logging::init_lambda();
    // Fail fast at cold start, naming the missing variable.
    let settings = IntakeSettings::from_env(&ProcessEnv)?;
    let deps = relay_fn_intake::IntakeDeps::new(&settings).await;
    let deps = &deps;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<aws_lambda_events::sqs::SqsEvent>| async move {
        Ok::<_, Error>(relay_fn_intake::handle(event.payload, deps).await)
    }))
    .await
}
