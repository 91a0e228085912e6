//! A recording HTTP proxy in front of the AWS emulator: a function built with
//! `KSEF_RELAY_AWS_ENDPOINT` pointing here sends every AWS call through it, and the proxy notes
//! each call as an IAM action and the resource it touched. So a test can check what a function
//! really did against what its role allows.
//!
//! One request per connection: the proxy forwards it to the emulator with `Connection: close`,
//! relays the answer (moto closes after each response too) and closes, so the client reconnects
//! for the next call. Plain threads and blocking sockets keep it independent of the runtime.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// One AWS call: the IAM action it needs and what it named (table, index, queue URL, bucket and
/// key, secret id).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AwsCall {
    pub action: String,
    pub resource: Resource,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Resource {
    Table {
        name: String,
        index: Option<String>,
    },
    Queue {
        url: String,
    },
    Object {
        bucket: String,
        key: String,
    },
    Bucket {
        bucket: String,
    },
    Secret {
        id: String,
    },
    Topic {
        arn: String,
    },
    /// A KMS key as the call named it (id, ARN or alias).
    Key {
        id: String,
    },
    Unknown(String),
}

pub struct RecordingProxy {
    pub url: String,
    calls: Arc<Mutex<Vec<AwsCall>>>,
}

impl RecordingProxy {
    /// Listens on a free loopback port and forwards to `upstream` (`http://host:port`).
    pub fn start(upstream: &str) -> RecordingProxy {
        let upstream = upstream.trim_start_matches("http://").trim_end_matches('/').to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let calls = Arc::new(Mutex::new(Vec::new()));
        let sink = calls.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (upstream, sink) = (upstream.clone(), sink.clone());
                std::thread::spawn(move || {
                    if let Err(e) = relay(stream, &upstream, &sink) {
                        eprintln!("recording proxy: {e}");
                    }
                });
            }
        });
        RecordingProxy { url, calls }
    }

    /// Every call recorded so far, in order.
    pub fn calls(&self) -> Vec<AwsCall> {
        self.calls.lock().unwrap().clone()
    }
}

fn relay(client: TcpStream, upstream: &str, sink: &Mutex<Vec<AwsCall>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line)? == 0 {
        return Ok(());
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end_matches(['\r', '\n']).to_owned();
        if line.is_empty() {
            break;
        }
        headers.push(line);
    }
    let header = |name: &str| {
        headers.iter().find_map(|h| {
            let (k, v) = h.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    };
    if header("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        return Err(std::io::Error::other(
            "chunked request bodies are not supported by the recording proxy",
        ));
    }
    if header("expect").is_some_and(|e| e.eq_ignore_ascii_case("100-continue")) {
        (&client).write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let length: usize = header("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;

    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let service = header("authorization").and_then(|a| signing_service(&a));
    let calls = classify(method, target, header("x-amz-target").as_deref(), service.as_deref(), &body);
    sink.lock().unwrap().extend(calls);

    let mut upstream_conn = TcpStream::connect(upstream)?;
    let mut head = request_line.clone();
    for h in &headers {
        if !h.to_ascii_lowercase().starts_with("connection:") {
            head.push_str(h);
            head.push_str("\r\n");
        }
    }
    head.push_str("Connection: close\r\n\r\n");
    upstream_conn.write_all(head.as_bytes())?;
    upstream_conn.write_all(&body)?;
    let mut response = Vec::new();
    upstream_conn.read_to_end(&mut response)?;
    (&client).write_all(&response)?;
    client.shutdown(std::net::Shutdown::Both).ok();
    Ok(())
}

/// The service a SigV4 request was signed for: `Credential=KEY/DATE/REGION/SERVICE/aws4_request`.
fn signing_service(authorization: &str) -> Option<String> {
    let credential = authorization.split("Credential=").nth(1)?;
    credential.split(['/', ',']).nth(3).map(str::to_owned)
}

/// The IAM action(s) and resource(s) of one request, from the JSON protocols' `X-Amz-Target`
/// (DynamoDB, SQS, Secrets Manager, KMS), the query protocol's `Action=` form (SNS), or S3's REST
/// method and path (path-style addressing).
fn classify(method: &str, target: &str, amz_target: Option<&str>, service: Option<&str>, body: &[u8]) -> Vec<AwsCall> {
    if amz_target.is_none() && service.is_some_and(|s| s != "s3") {
        let form: Vec<(String, String)> = String::from_utf8_lossy(body)
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (percent_decode(&k.replace('+', " ")), percent_decode(&v.replace('+', " "))))
            .collect();
        let param = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let service = service.unwrap_or_default();
        let action = format!("{service}:{}", param("Action").unwrap_or_default());
        let resource = match param("TopicArn") {
            Some(arn) => Resource::Topic { arn },
            None => Resource::Unknown(action.clone()),
        };
        return vec![AwsCall { action, resource }];
    }
    let json: serde_json::Value = serde_json::from_slice(body).unwrap_or(serde_json::Value::Null);
    let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    if let Some(t) = amz_target {
        let (service, op) = t.split_once('.').unwrap_or((t, ""));
        let call = |action: String, resource| AwsCall { action, resource };
        if service.starts_with("DynamoDB") {
            if op == "TransactWriteItems" {
                let items = json["TransactItems"].as_array().cloned().unwrap_or_default();
                return items
                    .iter()
                    .flat_map(|item| item.as_object().cloned().unwrap_or_default())
                    .map(|(kind, spec)| {
                        let action = match kind.as_str() {
                            "Put" => "dynamodb:PutItem",
                            "Update" => "dynamodb:UpdateItem",
                            "Delete" => "dynamodb:DeleteItem",
                            "ConditionCheck" => "dynamodb:ConditionCheckItem",
                            other => panic!("unknown transaction item {other}"),
                        };
                        call(
                            action.into(),
                            Resource::Table {
                                name: s(&spec["TableName"]),
                                index: None,
                            },
                        )
                    })
                    .collect();
            }
            let index = json["IndexName"].as_str().map(str::to_owned);
            return vec![call(
                format!("dynamodb:{op}"),
                Resource::Table {
                    name: s(&json["TableName"]),
                    index,
                },
            )];
        }
        if service == "AmazonSQS" {
            return vec![call(format!("sqs:{op}"), Resource::Queue { url: s(&json["QueueUrl"]) })];
        }
        if service == "secretsmanager" {
            return vec![call(format!("secretsmanager:{op}"), Resource::Secret { id: s(&json["SecretId"]) })];
        }
        if service == "TrentService" {
            return vec![call(format!("kms:{op}"), Resource::Key { id: s(&json["KeyId"]) })];
        }
        return vec![call(format!("{service}:{op}"), Resource::Unknown(t.to_owned()))];
    }
    let path = target.split('?').next().unwrap_or("").trim_start_matches('/');
    let (bucket, key) = path.split_once('/').unwrap_or((path, ""));
    let key = percent_decode(key);
    let action = match (method, key.is_empty()) {
        ("GET" | "HEAD", false) => "s3:GetObject",
        ("PUT", false) => "s3:PutObject",
        ("DELETE", false) => "s3:DeleteObject",
        _ => "s3:(bucket operation)",
    };
    let resource = if key.is_empty() {
        Resource::Bucket { bucket: bucket.to_owned() }
    } else {
        Resource::Object {
            bucket: bucket.to_owned(),
            key,
        }
    };
    vec![AwsCall {
        action: action.into(),
        resource,
    }]
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
