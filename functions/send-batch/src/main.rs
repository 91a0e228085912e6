use lambda_runtime::{service_fn, Error, LambdaEvent};
use relay_aws::settings::{ProcessEnv, SendBatchSettings};

#[tokio::main]
async fn main() -> Result<(), Error> {
    relay_lambda::init_logging();
    // Fail fast at cold start, naming the missing variable.
    let settings = SendBatchSettings::from_env(&ProcessEnv)?;
    let deps = relay_fn_send_batch::SendBatchDeps::from_settings(&settings).await?;
    let deps = &deps;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<aws_lambda_events::sqs::SqsEvent>| async move {
        Ok::<_, Error>(relay_fn_send_batch::handle(event.payload, deps).await)
    }))
    .await
}
