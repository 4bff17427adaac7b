//! The batch APIs over real HTTP: OpenAI's Files + Batch API and Anthropic's
//! Message Batches, driven by the simulator's speed knobs (small numbers, so
//! every test ends within a second or two).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use pacer_mock::tokens::{charge, count_for_model};
use pacer_mock::{expected_embedding, expected_reply, MockConfig, MockServer, Stats, DEFAULT_KEY};
use serde_json::{json, Value};
use support::*;

/// Fast batches: validating and finalizing last 20 ms, 500 lines a second.
fn fast() -> MockConfig {
    MockConfig {
        batch_speed: 500.0,
        batch_phase: 20,
        seed: Some(1),
        ..MockConfig::default()
    }
}

/// Loads the tokenizers (slow the first time in a debug build), so that
/// a test's timing starts with a warm simulator.
async fn warm_up(server: &MockServer) {
    assert_eq!(
        post(server, "/chat/completions", &chat_body("warm"))
            .await
            .status(),
        200
    );
    let resp = post(
        server,
        "/embeddings",
        &json!({"model": "text-embedding-3-small", "input": "warm"}),
    )
    .await;
    assert_eq!(resp.status(), 200);
}

const BOUNDARY: &str = "----pacer-mock-test-boundary-7MA4YWxkTrZu0gW";

/// A multipart upload body with `purpose` and a `file` holding `content`.
fn multipart(purpose: Option<&str>, content: Option<&str>) -> Vec<u8> {
    let mut body = String::new();
    if let Some(p) = purpose {
        body.push_str(&format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n{p}\r\n"
        ));
    }
    if let Some(c) = content {
        body.push_str(&format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"input.jsonl\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n{c}\r\n"
        ));
    }
    body.push_str(&format!("--{BOUNDARY}--\r\n"));
    body.into_bytes()
}

async fn upload_raw(
    server: &MockServer,
    key: Option<&str>,
    purpose: Option<&str>,
    content: Option<&str>,
) -> reqwest::Response {
    let mut req = client()
        .post(format!("{}/files", server.base_url()))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(multipart(purpose, content));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    req.send().await.unwrap()
}

/// Uploads `content` as a batch file; returns the file object.
async fn upload(server: &MockServer, content: &str) -> Value {
    let resp = upload_raw(server, Some(DEFAULT_KEY), Some("batch"), Some(content)).await;
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

async fn get(server: &MockServer, path: &str) -> reqwest::Response {
    get_with_key(server, path, DEFAULT_KEY).await
}

async fn get_with_key(server: &MockServer, path: &str, key: &str) -> reqwest::Response {
    client()
        .get(format!("{}{path}", server.base_url()))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
}

async fn get_json(server: &MockServer, path: &str) -> Value {
    let resp = get(server, path).await;
    assert_eq!(resp.status(), 200, "GET {path}");
    resp.json().await.unwrap()
}

async fn create_batch(
    server: &MockServer,
    file_id: &str,
    endpoint: &str,
    metadata: Value,
) -> Value {
    let resp = post(
        server,
        "/batches",
        &json!({"input_file_id": file_id, "endpoint": endpoint,
                "completion_window": "24h", "metadata": metadata}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

/// Uploads `lines` and creates a batch on `endpoint`.
async fn submit(server: &MockServer, lines: &[Value], endpoint: &str) -> Value {
    let file = upload(server, &jsonl(lines)).await;
    create_batch(server, file["id"].as_str().unwrap(), endpoint, json!({})).await
}

fn jsonl(lines: &[Value]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

const TERMINAL: [&str; 4] = ["completed", "failed", "expired", "cancelled"];

/// Polls until the batch ends; returns it and every status seen.
async fn poll(server: &MockServer, id: &str) -> (Value, Vec<String>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut seen: Vec<String> = Vec::new();
    loop {
        let b = get_json(server, &format!("/batches/{id}")).await;
        let status = b["status"].as_str().unwrap().to_string();
        if seen.last() != Some(&status) {
            seen.push(status.clone());
        }
        if TERMINAL.contains(&status.as_str()) {
            return (b, seen);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "batch {id} never ended: {b}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The lines of a file (none when `id` is null).
async fn file_lines(server: &MockServer, id: &Value) -> Vec<Value> {
    let Some(id) = id.as_str() else {
        return Vec::new();
    };
    let resp = get(server, &format!("/files/{id}/content")).await;
    assert_eq!(resp.status(), 200);
    resp.text()
        .await
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn chat_line(i: usize) -> Value {
    json!({"custom_id": format!("r{i:03}"), "method": "POST", "url": "/v1/chat/completions",
           "body": chat_body(&format!("document number {i}"))})
}

/// Output and error lines by custom_id, checking each appears exactly once.
fn by_custom_id(output: &[Value], errors: &[Value]) -> BTreeMap<String, Value> {
    let mut all = BTreeMap::new();
    for line in output.iter().chain(errors) {
        let id = line["custom_id"].as_str().unwrap().to_string();
        assert!(all.insert(id.clone(), line.clone()).is_none(), "{id} twice");
    }
    all
}

/// A chat answer without what differs between two answers (id, time).
fn content_of(body: &Value) -> Value {
    let mut b = body.clone();
    b.as_object_mut().unwrap().remove("id");
    b.as_object_mut().unwrap().remove("created");
    b
}

fn check_chat_answer(body: &Value, request: &Value) {
    let text = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(text, expected_reply("/v1/chat/completions", request));
    let usage = &body["usage"];
    assert_eq!(
        usage["prompt_tokens"],
        charge("/v1/chat/completions", request).prompt
    );
    assert_eq!(
        usage["completion_tokens"],
        count_for_model(request["model"].as_str().unwrap(), text)
    );
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
}

// ---- OpenAI: the happy path ------------------------------------------------

#[tokio::test]
async fn a_chat_batch_runs_to_completion_with_live_answers() {
    let server = start(MockConfig {
        batch_speed: 200.0,
        ..fast()
    })
    .await;
    let lines: Vec<Value> = (0..40).map(chat_line).collect();
    let content = jsonl(&lines);
    let file = upload(&server, &content).await;
    assert!(file["id"].as_str().unwrap().starts_with("file-"));
    assert_eq!(file["object"], "file");
    assert_eq!(file["bytes"], content.len());
    assert_eq!(file["purpose"], "batch");
    assert_eq!(file["status"], "processed");
    assert_eq!(file["filename"], "input.jsonl");
    assert!(file["created_at"].as_u64().unwrap() > 1_700_000_000);
    let fid = file["id"].as_str().unwrap();
    assert_eq!(get_json(&server, &format!("/files/{fid}")).await, file);
    let raw = get(&server, &format!("/files/{fid}/content")).await;
    assert_eq!(raw.text().await.unwrap(), content);

    let created = create_batch(&server, fid, "/v1/chat/completions", json!({"job": "t1"})).await;
    let id = created["id"].as_str().unwrap();
    assert!(id.starts_with("batch_"));
    assert_eq!(created["object"], "batch");
    assert_eq!(created["status"], "validating");
    assert_eq!(created["endpoint"], "/v1/chat/completions");
    assert_eq!(created["input_file_id"], fid);
    assert_eq!(created["completion_window"], "24h");
    assert_eq!(created["metadata"], json!({"job": "t1"}));
    assert_eq!(
        created["request_counts"],
        json!({"total": 0, "completed": 0, "failed": 0})
    );
    for k in [
        "errors",
        "output_file_id",
        "error_file_id",
        "in_progress_at",
        "finalizing_at",
        "completed_at",
        "failed_at",
        "expired_at",
        "cancelling_at",
        "cancelled_at",
    ] {
        assert!(created[k].is_null(), "{k} is {}", created[k]);
    }
    let created_at = created["created_at"].as_u64().unwrap();
    assert_eq!(created["expires_at"], created_at + 24 * 60 * 60);

    let (done, seen) = poll(&server, id).await;
    assert_eq!(seen.first().map(String::as_str), Some("validating"));
    assert!(seen.contains(&"in_progress".to_string()), "{seen:?}");
    assert_eq!(seen.last().map(String::as_str), Some("completed"));
    assert_eq!(
        done["request_counts"],
        json!({"total": 40, "completed": 40, "failed": 0})
    );
    assert!(done["error_file_id"].is_null());
    for k in ["in_progress_at", "finalizing_at", "completed_at"] {
        assert!(done[k].as_u64().unwrap() >= created_at, "{k}");
    }
    assert_eq!(done["model"], "gpt-4o-mini");

    let output = file_lines(&server, &done["output_file_id"]).await;
    let results = by_custom_id(&output, &[]);
    assert_eq!(results.len(), 40);
    let order: Vec<&str> = output
        .iter()
        .map(|l| l["custom_id"].as_str().unwrap())
        .collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_ne!(order, sorted, "the output is shuffled a little");
    let mut prompt_tokens = 0;
    let mut completion_tokens = 0;
    for line in &lines {
        let r = &results[line["custom_id"].as_str().unwrap()];
        assert!(r["id"].as_str().unwrap().starts_with("batch_req_"));
        assert!(r["error"].is_null());
        assert_eq!(r["response"]["status_code"], 200);
        assert!(r["response"]["request_id"]
            .as_str()
            .unwrap()
            .starts_with("req_"));
        let body = &r["response"]["body"];
        check_chat_answer(body, &line["body"]);
        prompt_tokens += body["usage"]["prompt_tokens"].as_u64().unwrap();
        completion_tokens += body["usage"]["completion_tokens"].as_u64().unwrap();
    }
    assert_eq!(done["usage"]["input_tokens"], prompt_tokens);
    assert_eq!(done["usage"]["output_tokens"], completion_tokens);

    // The same request live gets the same answer.
    let live: Value = post(&server, "/chat/completions", &lines[7]["body"])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        content_of(&live),
        content_of(&results["r007"]["response"]["body"])
    );

    let out_file = get_json(
        &server,
        &format!("/files/{}", done["output_file_id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(out_file["purpose"], "batch_output");

    let stats = server.stats();
    assert_eq!(stats.files_uploaded, 1);
    assert_eq!(stats.batches_created, 1);
    assert_eq!(stats.message_batches_created, 0);
    assert_eq!(stats.batch_lines, 40);
    assert_eq!(stats.batch_prompt_tokens, prompt_tokens);
    assert_eq!(stats.batch_completion_tokens, completion_tokens);
    assert_eq!(stats.duplicate_batch_inputs, 0);
    assert_eq!(stats.duplicate_batch_successes, 0);
    assert_eq!(stats.accepted, 1, "only the live call was admitted");
    let paths: BTreeSet<String> = server.log().into_iter().map(|e| e.path).collect();
    assert!(paths.contains("/v1/files"));
    assert!(paths.contains(&format!("/v1/files/{fid}/content")));
    assert!(paths.contains("/v1/batches"));
    assert!(paths.contains(&format!("/v1/batches/{id}")));

    // /mock/stats agrees and older readers ignore what they do not know.
    let over_http: Stats = reqwest::get(format!("http://{}/mock/stats", server.addr()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(over_http.batch_lines, 40);
    let old: Stats = serde_json::from_str(r#"{"requests": 3}"#).unwrap();
    assert_eq!((old.requests, old.batch_lines), (3, 0));
}

#[tokio::test]
async fn an_embeddings_batch_answers_live_embeddings() {
    let server = start(fast()).await;
    let lines: Vec<Value> = (0..10)
        .map(|i| {
            let input = if i % 2 == 0 {
                json!(format!("text {i}"))
            } else {
                json!([format!("a {i}"), format!("b {i}")])
            };
            json!({"custom_id": format!("e{i}"), "method": "POST", "url": "/v1/embeddings",
                   "body": {"model": "text-embedding-3-small", "input": input}})
        })
        .collect();
    let batch = submit(&server, &lines, "/v1/embeddings").await;
    let (done, _) = poll(&server, batch["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "completed");
    assert_eq!(done["request_counts"]["completed"], 10);
    let output = file_lines(&server, &done["output_file_id"]).await;
    let results = by_custom_id(&output, &[]);
    for line in &lines {
        let body = &results[line["custom_id"].as_str().unwrap()]["response"]["body"];
        let request = &line["body"];
        let items: Vec<Value> = match &request["input"] {
            Value::Array(a) => a.clone(),
            other => vec![other.clone()],
        };
        assert_eq!(body["data"].as_array().unwrap().len(), items.len());
        for (i, item) in items.iter().enumerate() {
            let got: Vec<f32> =
                serde_json::from_value(body["data"][i]["embedding"].clone()).unwrap();
            assert_eq!(got, expected_embedding(item));
        }
        assert_eq!(
            body["usage"]["prompt_tokens"],
            charge("/v1/embeddings", request).prompt
        );
        let live: Value = post(&server, "/embeddings", request)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(&live, body);
    }
}

// ---- OpenAI: failures --------------------------------------------------------

#[tokio::test]
async fn line_errors_land_in_the_error_file_and_a_resubmission_rolls_fresh_dice() {
    let server = start(MockConfig {
        batch_line_error_rate: 0.3,
        seed: Some(7),
        ..fast()
    })
    .await;
    let mut lines: Vec<Value> = (0..60).map(chat_line).collect();
    lines.push(
        json!({"custom_id": "no-messages", "method": "POST", "url": "/v1/chat/completions",
                      "body": {"model": "gpt-4o-mini"}}),
    );
    lines.push(
        json!({"custom_id": "no-model", "method": "POST", "url": "/v1/chat/completions",
                      "body": {"messages": [{"role": "user", "content": "hi"}]}}),
    );
    let batch = submit(&server, &lines, "/v1/chat/completions").await;
    let (done, _) = poll(&server, batch["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "completed");
    let output = file_lines(&server, &done["output_file_id"]).await;
    let errors = file_lines(&server, &done["error_file_id"]).await;
    let all = by_custom_id(&output, &errors);
    assert_eq!(all.len(), 62);
    assert_eq!(
        done["request_counts"],
        json!({"total": 62, "completed": output.len(), "failed": errors.len()})
    );
    for id in ["no-messages", "no-model"] {
        let r = &all[id]["response"];
        assert_eq!(r["status_code"], 400, "{id}");
        assert_eq!(r["body"]["error"]["type"], "invalid_request_error");
        assert!(all[id]["error"].is_null());
    }
    let server_errors: Vec<&Value> = errors
        .iter()
        .filter(|e| e["response"]["status_code"] == 500)
        .collect();
    assert_eq!(server_errors.len() + 2, errors.len());
    assert!(
        (8..=30).contains(&server_errors.len()),
        "about 30% of 60: {}",
        server_errors.len()
    );
    for e in &server_errors {
        assert_eq!(e["response"]["body"]["error"]["type"], "server_error");
        assert!(e["error"].is_null());
    }
    for o in &output {
        let id = o["custom_id"].as_str().unwrap();
        let i: usize = id[1..].parse().unwrap();
        check_chat_answer(&o["response"]["body"], &lines[i]["body"]);
    }

    // Resubmitting the 500s (only them) until none is left.
    let mut retry: Vec<Value> = server_errors
        .iter()
        .map(|e| {
            let i: usize = e["custom_id"].as_str().unwrap()[1..].parse().unwrap();
            lines[i].clone()
        })
        .collect();
    let mut succeeded = output.len();
    for _round in 0..10 {
        if retry.is_empty() {
            break;
        }
        let batch = submit(&server, &retry, "/v1/chat/completions").await;
        let (done, _) = poll(&server, batch["id"].as_str().unwrap()).await;
        let output = file_lines(&server, &done["output_file_id"]).await;
        succeeded += output.len();
        let ok: BTreeSet<&str> = output
            .iter()
            .map(|o| o["custom_id"].as_str().unwrap())
            .collect();
        retry.retain(|l| !ok.contains(l["custom_id"].as_str().unwrap()));
    }
    assert!(
        retry.is_empty(),
        "fresh dice let every line through eventually"
    );
    assert_eq!(succeeded, 60);
    let stats = server.stats();
    assert_eq!(stats.duplicate_batch_successes, 0, "no work done twice");
    assert_eq!(stats.duplicate_batch_inputs, 0);
    assert!(stats.batch_lines >= 62);
}

#[tokio::test]
async fn unprocessed_lines_expire_with_batch_expired() {
    let server = start(MockConfig {
        batch_speed: 20.0,
        batch_phase: 150,
        batch_expire_after: Duration::from_millis(600),
        ..fast()
    })
    .await;
    warm_up(&server).await;
    let lines: Vec<Value> = (0..30).map(chat_line).collect();
    let batch = submit(&server, &lines, "/v1/chat/completions").await;
    let (done, _) = poll(&server, batch["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "expired");
    assert!(done["expired_at"].is_u64());
    assert_eq!(done["expires_at"], done["expired_at"]);
    let output = file_lines(&server, &done["output_file_id"]).await;
    let errors = file_lines(&server, &done["error_file_id"]).await;
    // (0.6 s - 0.15 s validating) × 20 lines a second.
    assert_eq!(output.len(), 9);
    assert_eq!(errors.len(), 21);
    assert_eq!(by_custom_id(&output, &errors).len(), 30);
    for e in &errors {
        assert!(e["response"].is_null());
        assert_eq!(e["error"]["code"], "batch_expired");
        assert!(e["error"]["message"].is_string());
    }
    assert_eq!(
        done["request_counts"],
        json!({"total": 30, "completed": 9, "failed": 21})
    );
    assert_eq!(server.stats().batch_lines, 9);
}

#[tokio::test]
async fn the_enqueued_token_limit_fails_a_batch_until_the_earlier_one_completes() {
    let lines: Vec<Value> = (0..10).map(chat_line).collect();
    let tokens: u64 = lines
        .iter()
        .map(|l| charge("/v1/chat/completions", &l["body"]).total())
        .sum();
    let limit = tokens + tokens / 2;
    // 10 lines at 20 a second: the first batch runs for half a second.
    let server = start(MockConfig {
        batch_speed: 20.0,
        batch_token_limit: Some(limit),
        ..fast()
    })
    .await;
    let file = upload(&server, &jsonl(&lines)).await;
    let fid = file["id"].as_str().unwrap();
    let first = create_batch(&server, fid, "/v1/chat/completions", json!({})).await;

    // The same tokens again are too many while the first batch runs...
    let second = create_batch(&server, fid, "/v1/chat/completions", json!({})).await;
    let (failed, seen) = poll(&server, second["id"].as_str().unwrap()).await;
    assert_eq!(seen, ["validating", "failed"]);
    assert!(failed["failed_at"].is_u64());
    assert!(failed["output_file_id"].is_null() && failed["error_file_id"].is_null());
    assert_eq!(failed["errors"]["object"], "list");
    let err = &failed["errors"]["data"][0];
    assert_eq!(err["code"], "token_limit_exceeded");
    let msg = err["message"].as_str().unwrap();
    assert!(
        msg.starts_with("Enqueued token limit reached for gpt-4o-mini in organization"),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("Limit: {limit} enqueued tokens")),
        "{msg}"
    );

    // ...but another model has its own limit.
    let other: Vec<Value> = lines
        .iter()
        .map(|l| {
            let mut l = l.clone();
            l["body"]["model"] = json!("gpt-4.1-mini");
            l
        })
        .collect();
    let third = submit(&server, &other, "/v1/chat/completions").await;

    let (done, _) = poll(&server, first["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "completed");
    let again = create_batch(&server, fid, "/v1/chat/completions", json!({})).await;
    let (done, _) = poll(&server, again["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "completed", "{done}");
    let (done, _) = poll(&server, third["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "completed");
    let stats = server.stats();
    assert_eq!(stats.batches_created, 4);
    assert_eq!(
        stats.duplicate_batch_inputs, 1,
        "the failed batch did no work; the resubmission after completion counts"
    );
}

#[tokio::test]
async fn a_cancelled_batch_keeps_its_finished_lines_and_cancels_the_rest() {
    // 40 lines at 20 a second: 2 s, cancelled after about 0.25 s of it.
    let server = start(MockConfig {
        batch_speed: 20.0,
        ..fast()
    })
    .await;
    let lines: Vec<Value> = (0..40).map(chat_line).collect();
    let batch = submit(&server, &lines, "/v1/chat/completions").await;
    let id = batch["id"].as_str().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while get_json(&server, &format!("/batches/{id}")).await["status"] == "validating" {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(250)).await;
    let resp = post(&server, &format!("/batches/{id}/cancel"), &json!({})).await;
    assert_eq!(resp.status(), 200);
    let cancelling: Value = resp.json().await.unwrap();
    assert_eq!(cancelling["status"], "cancelling");
    assert!(cancelling["cancelling_at"].is_u64());
    let (done, _) = poll(&server, id).await;
    assert_eq!(done["status"], "cancelled");
    assert!(done["cancelled_at"].is_u64());
    let output = file_lines(&server, &done["output_file_id"]).await;
    let errors = file_lines(&server, &done["error_file_id"]).await;
    assert_eq!(by_custom_id(&output, &errors).len(), 40);
    assert!(!output.is_empty() && output.len() < 40, "{}", output.len());
    for e in &errors {
        assert_eq!(e["error"]["code"], "batch_cancelled");
        assert!(e["response"].is_null());
    }
    assert_eq!(done["request_counts"]["completed"], output.len());
    assert_eq!(server.stats().batch_lines, output.len() as u64);

    // Cancelling again is harmless; cancelling a completed batch is refused.
    let again = post(&server, &format!("/batches/{id}/cancel"), &json!({})).await;
    assert_eq!(again.status(), 200);
    let finished = submit(&server, &lines[..2], "/v1/chat/completions").await;
    let fid = finished["id"].as_str().unwrap();
    poll(&server, fid).await;
    let refused = post(&server, &format!("/batches/{fid}/cancel"), &json!({})).await;
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn batches_are_listed_newest_first_with_their_metadata() {
    let server = start(MockConfig {
        keys: vec![DEFAULT_KEY.into(), "sk-other".into()],
        ..fast()
    })
    .await;
    let file = upload(&server, &jsonl(&[chat_line(0)])).await;
    let fid = file["id"].as_str().unwrap();
    let mut ids = Vec::new();
    for part in 0..3 {
        let b = create_batch(
            &server,
            fid,
            "/v1/chat/completions",
            json!({"pacer_job": "job-1", "part": part.to_string()}),
        )
        .await;
        ids.push(b["id"].as_str().unwrap().to_string());
    }
    let page = get_json(&server, "/batches?limit=2").await;
    assert_eq!(page["object"], "list");
    assert_eq!(page["has_more"], true);
    let data = page["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[0]["id"], ids[2].as_str());
    assert_eq!(data[1]["id"], ids[1].as_str());
    assert_eq!(page["first_id"], ids[2].as_str());
    assert_eq!(page["last_id"], ids[1].as_str());
    assert_eq!(
        data[0]["metadata"],
        json!({"pacer_job": "job-1", "part": "2"})
    );
    let rest = get_json(&server, &format!("/batches?limit=2&after={}", ids[1])).await;
    assert_eq!(rest["has_more"], false);
    assert_eq!(rest["data"][0]["id"], ids[0].as_str());
    assert_eq!(rest["data"][0]["metadata"]["part"], "0");

    // Another key sees none of them.
    let theirs: Value = get_with_key(&server, "/batches", "sk-other")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(theirs["data"], json!([]));
    assert!(theirs["first_id"].is_null());
    let resp = get_with_key(&server, &format!("/batches/{}", ids[0]), "sk-other").await;
    assert_eq!(resp.status(), 404);
    let resp = get_with_key(&server, &format!("/files/{fid}/content"), "sk-other").await;
    assert_eq!(resp.status(), 404);

    let too_much = json!({"input_file_id": fid, "endpoint": "/v1/chat/completions",
        "completion_window": "24h", "metadata": (0..17).map(|i| (i.to_string(), json!("v"))).collect::<serde_json::Map<_, _>>()});
    let resp = post(&server, "/batches", &too_much).await;
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn bad_uploads_and_bad_batches_are_refused_like_openai() {
    let server = start(fast()).await;
    let content = jsonl(&[chat_line(0)]);
    for (purpose, file, param) in [
        (Some("fine-tune"), Some(content.as_str()), "purpose"),
        (None, Some(content.as_str()), "purpose"),
        (Some("batch"), None, "file"),
    ] {
        let resp = upload_raw(&server, Some(DEFAULT_KEY), purpose, file).await;
        assert_eq!(resp.status(), 400, "{purpose:?}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["param"], param);
    }
    let not_multipart = client()
        .post(format!("{}/files", server.base_url()))
        .bearer_auth(DEFAULT_KEY)
        .json(&json!({"purpose": "batch"}))
        .send()
        .await
        .unwrap();
    assert_eq!(not_multipart.status(), 400);

    let file = upload(&server, &content).await;
    let fid = file["id"].as_str().unwrap();
    for (body, param) in [
        (
            json!({"input_file_id": "file-nope", "endpoint": "/v1/chat/completions", "completion_window": "24h"}),
            "input_file_id",
        ),
        (
            json!({"input_file_id": fid, "endpoint": "/v1/chat/completions", "completion_window": "1h"}),
            "completion_window",
        ),
        (
            json!({"input_file_id": fid, "endpoint": "/v1/images", "completion_window": "24h"}),
            "endpoint",
        ),
        (
            json!({"input_file_id": fid, "endpoint": "/v1/responses", "completion_window": "24h"}),
            "endpoint",
        ),
        (
            json!({"endpoint": "/v1/chat/completions", "completion_window": "24h"}),
            "input_file_id",
        ),
    ] {
        let resp = post(&server, "/batches", &body).await;
        assert_eq!(resp.status(), 400, "{body}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"]["param"], param, "{err}");
    }

    // Problems inside the file fail the batch at validation, with line numbers.
    let good = chat_line(0).to_string();
    let cases: Vec<(String, &str, u64)> = vec![
        (format!("{good}\n{{not json\n"), "invalid_json_line", 2),
        (
            format!(
                "{good}\n{}\n",
                json!({"custom_id": "x", "method": "POST", "url": "/v1/embeddings", "body": {}})
            ),
            "mismatched_endpoint",
            2,
        ),
        (format!("{good}\n{good}\n"), "duplicate_custom_id", 2),
        (
            format!(
                "{}\n",
                json!({"method": "POST", "url": "/v1/chat/completions", "body": {}})
            ),
            "missing_required_parameter",
            1,
        ),
    ];
    for (text, code, line) in cases {
        let batch = submit_text(&server, &text).await;
        let (failed, _) = poll(&server, batch["id"].as_str().unwrap()).await;
        assert_eq!(failed["status"], "failed", "{code}");
        let err = &failed["errors"]["data"][0];
        assert_eq!(err["code"], code);
        assert_eq!(err["line"], line, "{code}");
        assert!(err["message"].is_string());
        assert_eq!(failed["request_counts"]["total"], 0);
    }
    let empty = submit_text(&server, "\n").await;
    let (failed, _) = poll(&server, empty["id"].as_str().unwrap()).await;
    assert_eq!(failed["errors"]["data"][0]["code"], "empty_file");
    assert_eq!(server.stats().batch_lines, 0);
}

async fn submit_text(server: &MockServer, text: &str) -> Value {
    let file = upload(server, text).await;
    create_batch(
        server,
        file["id"].as_str().unwrap(),
        "/v1/chat/completions",
        json!({}),
    )
    .await
}

#[tokio::test]
async fn the_batch_apis_need_a_key_and_files_can_be_deleted() {
    let server = start(fast()).await;
    let resp = upload_raw(&server, None, Some("batch"), Some("{}\n")).await;
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_api_key");
    let resp = upload_raw(&server, Some("sk-wrong"), Some("batch"), Some("{}\n")).await;
    assert_eq!(resp.status(), 401);
    let resp = client()
        .get(format!("{}/batches", server.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = client()
        .post(format!("{}/messages/batches", server.base_url()))
        .header("x-api-key", "nope")
        .json(&json!({"requests": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "authentication_error");
    assert_eq!(server.stats().by_status["401"], 4);

    let file = upload(&server, "{}\n").await;
    let fid = file["id"].as_str().unwrap();
    let resp = client()
        .delete(format!("{}/files/{fid}", server.base_url()))
        .bearer_auth(DEFAULT_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body, json!({"id": fid, "object": "file", "deleted": true}));
    let resp = get(&server, &format!("/files/{fid}")).await;
    assert_eq!(resp.status(), 404);
    let missing = get(&server, "/batches/batch_nope").await;
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn batches_leave_the_live_limits_alone() {
    let server = start(MockConfig {
        rpm: Some(1),
        tpm: Some(1_000),
        ..fast()
    })
    .await;
    let lines: Vec<Value> = (0..20).map(chat_line).collect();
    let batch = submit(&server, &lines, "/v1/chat/completions").await;
    let (done, _) = poll(&server, batch["id"].as_str().unwrap()).await;
    assert_eq!(done["request_counts"]["completed"], 20);
    let resp = post(&server, "/chat/completions", &chat_body("live")).await;
    assert_eq!(resp.status(), 200, "the live bucket is untouched");
}

#[tokio::test]
async fn the_same_input_submitted_twice_is_counted() {
    let server = start(MockConfig {
        batch_speed: 40.0,
        ..fast()
    })
    .await;
    let lines: Vec<Value> = (0..3).map(chat_line).collect();
    let a = submit(&server, &lines, "/v1/chat/completions").await;
    let b = submit(&server, &[chat_line(9)], "/v1/chat/completions").await;
    poll(&server, a["id"].as_str().unwrap()).await;
    poll(&server, b["id"].as_str().unwrap()).await;
    assert_eq!(server.stats().duplicate_batch_inputs, 0);
    // Uploaded again: another file, the same content.
    let c = submit(&server, &lines, "/v1/chat/completions").await;
    poll(&server, c["id"].as_str().unwrap()).await;
    let stats = server.stats();
    assert_eq!(stats.duplicate_batch_inputs, 1);
    assert_eq!(
        stats.duplicate_batch_successes, 3,
        "three lines answered twice"
    );
    assert_eq!(stats.files_uploaded, 3);

    // Retrying a batch whose every line failed is not a duplicate...
    let broken = [
        json!({"custom_id": "b", "method": "POST", "url": "/v1/chat/completions",
                         "body": {"model": "gpt-4o-mini"}}),
    ];
    let d = submit(&server, &broken, "/v1/chat/completions").await;
    poll(&server, d["id"].as_str().unwrap()).await;
    let e = submit(&server, &broken, "/v1/chat/completions").await;
    poll(&server, e["id"].as_str().unwrap()).await;
    assert_eq!(server.stats().duplicate_batch_inputs, 1);
    // ...creating one again while the first still runs (a crash between
    // create and recording its id) is.
    let fresh: Vec<Value> = (20..30).map(chat_line).collect();
    let f = submit(&server, &fresh, "/v1/chat/completions").await;
    let g = submit(&server, &fresh, "/v1/chat/completions").await;
    assert_eq!(f["status"], "validating");
    poll(&server, g["id"].as_str().unwrap()).await;
    assert_eq!(server.stats().duplicate_batch_inputs, 2);

    // Anthropic: the same requests in another order are the same set.
    let reqs: Vec<Value> = (0..3)
        .map(|i| message_request(&format!("m{i}"), &format!("doc {i}")))
        .collect();
    anthropic_create(&server, &reqs).await;
    let reversed: Vec<Value> = reqs.iter().rev().cloned().collect();
    anthropic_create(&server, &reversed).await;
    let stats = server.stats();
    assert_eq!(stats.message_batches_created, 2);
    assert_eq!(stats.duplicate_batch_inputs, 3);
}

// ---- Anthropic ---------------------------------------------------------------

fn message_request(custom_id: &str, content: &str) -> Value {
    json!({"custom_id": custom_id, "params": messages_body(content)})
}

async fn anthropic(server: &MockServer, method: reqwest::Method, path: &str) -> reqwest::Response {
    client()
        .request(
            method,
            format!("{}/messages/batches{path}", server.base_url()),
        )
        .header("x-api-key", DEFAULT_KEY)
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap()
}

async fn anthropic_create(server: &MockServer, requests: &[Value]) -> Value {
    let resp = client()
        .post(format!("{}/messages/batches", server.base_url()))
        .header("x-api-key", DEFAULT_KEY)
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"requests": requests}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("request-id"));
    resp.json().await.unwrap()
}

async fn anthropic_poll(server: &MockServer, id: &str) -> (Value, Vec<String>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut seen: Vec<String> = Vec::new();
    loop {
        let resp = anthropic(server, reqwest::Method::GET, &format!("/{id}")).await;
        assert_eq!(resp.status(), 200);
        let b: Value = resp.json().await.unwrap();
        let status = b["processing_status"].as_str().unwrap().to_string();
        if seen.last() != Some(&status) {
            seen.push(status.clone());
        }
        if status == "ended" {
            return (b, seen);
        }
        assert!(std::time::Instant::now() < deadline, "never ended: {b}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The results of an ended batch, by custom_id, each exactly once.
async fn anthropic_results(server: &MockServer, batch: &Value) -> BTreeMap<String, Value> {
    let url = batch["results_url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("http://{}/v1/messages/batches/", server.addr())),
        "{url}"
    );
    let text = client()
        .get(url)
        .header("x-api-key", DEFAULT_KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let id = v["custom_id"].as_str().unwrap().to_string();
        assert!(
            out.insert(id.clone(), v["result"].clone()).is_none(),
            "{id} twice"
        );
    }
    out
}

#[tokio::test]
async fn an_anthropic_batch_ends_with_live_messages_and_errors() {
    let server = start(MockConfig {
        batch_speed: 200.0,
        batch_line_error_rate: 0.25,
        seed: Some(11),
        ..fast()
    })
    .await;
    let mut requests: Vec<Value> = (0..30)
        .map(|i| message_request(&format!("m-{i}"), &format!("document {i}")))
        .collect();
    requests.push(json!({"custom_id": "no_max_tokens", "params": {
        "model": "claude-3-5-haiku-latest", "messages": [{"role": "user", "content": "hi"}]}}));
    let created = anthropic_create(&server, &requests).await;
    let id = created["id"].as_str().unwrap();
    assert!(id.starts_with("msgbatch_"));
    assert_eq!(created["type"], "message_batch");
    assert_eq!(created["processing_status"], "in_progress");
    assert_eq!(
        created["request_counts"],
        json!({"processing": 31, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0})
    );
    for k in ["ended_at", "cancel_initiated_at", "results_url"] {
        assert!(created[k].is_null(), "{k}");
    }
    let created_at =
        chrono::DateTime::parse_from_rfc3339(created["created_at"].as_str().unwrap()).unwrap();
    let expires_at =
        chrono::DateTime::parse_from_rfc3339(created["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!((expires_at - created_at).num_hours(), 24);

    let early = anthropic(&server, reqwest::Method::GET, &format!("/{id}/results")).await;
    assert_eq!(early.status(), 400, "no results before the end");

    let (ended, seen) = anthropic_poll(&server, id).await;
    assert_eq!(seen, ["in_progress", "ended"]);
    assert!(ended["ended_at"].is_string());
    let results = anthropic_results(&server, &ended).await;
    assert_eq!(results.len(), 31);
    let counts = &ended["request_counts"];
    let errored: Vec<&String> = results
        .iter()
        .filter(|(_, r)| r["type"] == "errored")
        .map(|(k, _)| k)
        .collect();
    assert_eq!(counts["succeeded"], 31 - errored.len());
    assert_eq!(counts["errored"], errored.len());
    assert_eq!(counts["processing"], 0);
    assert_eq!(
        results["no_max_tokens"]["error"],
        json!({"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"}})
    );
    let api_errors = results
        .values()
        .filter(|r| r["type"] == "errored" && r["error"]["error"]["type"] == "api_error")
        .count();
    assert!(
        (2..=14).contains(&api_errors),
        "about 25% of 30: {api_errors}"
    );
    for req in &requests[..30] {
        let r = &results[req["custom_id"].as_str().unwrap()];
        if r["type"] != "succeeded" {
            continue;
        }
        let message = &r["message"];
        let params = &req["params"];
        let text = message["content"][0]["text"].as_str().unwrap();
        assert_eq!(text, expected_reply("/v1/messages", params));
        assert_eq!(
            message["usage"]["input_tokens"],
            charge("/v1/messages", params).prompt
        );
        assert_eq!(message["type"], "message");
        let live: Value = client()
            .post(format!("{}/messages", server.base_url()))
            .header("x-api-key", DEFAULT_KEY)
            .json(params)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(content_of(&live), content_of(message));
    }
    let stats = server.stats();
    assert_eq!(stats.message_batches_created, 1);
    assert_eq!(stats.batch_lines, 31);
    assert!(server
        .log()
        .iter()
        .any(|e| e.path == format!("/v1/messages/batches/{id}/results")));
}

#[tokio::test]
async fn anthropic_requests_expire_or_are_canceled() {
    // Processing starts after 0.1 s, the batch expires at 0.3 s: 4 answered.
    let server = start(MockConfig {
        batch_speed: 20.0,
        batch_phase: 100,
        batch_expire_after: Duration::from_millis(300),
        ..fast()
    })
    .await;
    warm_up(&server).await;
    let requests: Vec<Value> = (0..20)
        .map(|i| message_request(&format!("x{i}"), &format!("doc {i}")))
        .collect();
    let batch = anthropic_create(&server, &requests).await;
    let (ended, _) = anthropic_poll(&server, batch["id"].as_str().unwrap()).await;
    assert_eq!(
        ended["request_counts"],
        json!({"processing": 0, "succeeded": 4, "errored": 0, "canceled": 0, "expired": 16})
    );
    assert_eq!(ended["ended_at"], ended["expires_at"]);
    let results = anthropic_results(&server, &ended).await;
    assert_eq!(results.len(), 20);
    assert_eq!(
        results
            .values()
            .filter(|r| **r == json!({"type": "expired"}))
            .count(),
        16
    );

    // 20 requests at 20 a second, cancelled after about 0.3 s.
    let server = start(MockConfig {
        batch_speed: 20.0,
        ..fast()
    })
    .await;
    warm_up(&server).await;
    let batch = anthropic_create(&server, &requests).await;
    let id = batch["id"].as_str().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let resp = anthropic(&server, reqwest::Method::POST, &format!("/{id}/cancel")).await;
    assert_eq!(resp.status(), 200);
    let canceling: Value = resp.json().await.unwrap();
    assert_eq!(canceling["processing_status"], "canceling");
    assert!(canceling["cancel_initiated_at"].is_string());
    let (ended, seen) = anthropic_poll(&server, id).await;
    assert_eq!(seen.last().map(String::as_str), Some("ended"));
    let results = anthropic_results(&server, &ended).await;
    let canceled = results.values().filter(|r| r["type"] == "canceled").count();
    let succeeded = results
        .values()
        .filter(|r| r["type"] == "succeeded")
        .count();
    assert_eq!(canceled + succeeded, 20);
    assert!(canceled > 0 && succeeded > 0, "{canceled} canceled");
    assert_eq!(ended["request_counts"]["canceled"], canceled);
    let again = anthropic(&server, reqwest::Method::POST, &format!("/{id}/cancel")).await;
    assert_eq!(again.status(), 400, "it has ended");

    // Deleting an ended batch.
    let resp = anthropic(&server, reqwest::Method::DELETE, &format!("/{id}")).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["type"], "message_batch_deleted");
    let resp = anthropic(&server, reqwest::Method::GET, &format!("/{id}")).await;
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "not_found_error");
}

#[tokio::test]
async fn anthropic_batches_list_and_refuse_bad_requests() {
    let server = start(fast()).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let b = anthropic_create(&server, &[message_request("only", &format!("doc {i}"))]).await;
        ids.push(b["id"].as_str().unwrap().to_string());
    }
    let page: Value = anthropic(&server, reqwest::Method::GET, "?limit=2")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["has_more"], true);
    assert_eq!(page["first_id"], ids[2].as_str());
    assert_eq!(page["last_id"], ids[1].as_str());
    let rest: Value = anthropic(
        &server,
        reqwest::Method::GET,
        &format!("?limit=2&after_id={}", ids[1]),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(rest["has_more"], false);
    assert_eq!(rest["data"][0]["id"], ids[0].as_str());

    for body in [
        json!({}),
        json!({"requests": []}),
        json!({"requests": [{"custom_id": "has space", "params": messages_body("x")}]}),
        json!({"requests": [{"custom_id": "a", "params": messages_body("x")},
                            {"custom_id": "a", "params": messages_body("y")}]}),
        json!({"requests": [{"custom_id": "a"}]}),
    ] {
        let resp = client()
            .post(format!("{}/messages/batches", server.base_url()))
            .header("x-api-key", DEFAULT_KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{body}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["type"], "error");
        assert_eq!(err["error"]["type"], "invalid_request_error");
    }
    assert_eq!(server.stats().message_batches_created, 3);
}
