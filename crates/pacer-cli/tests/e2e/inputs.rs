//! Prompt JSONL, folders of documents, priorities and estimates.

use pacer_mock::MockConfig;
use serde_json::{json, Value};

use crate::support::*;

fn prompt_line(id: &str, prompt: &str, priority: i64) -> String {
    json!({"id": id, "prompt": prompt, "priority": priority}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priorities_go_first_then_input_order_as_the_provider_sees_them() {
    let env = Env::new(MockConfig::default()).await;
    let mut lines = Vec::new();
    for i in 0..30 {
        let priority = if i % 10 == 7 {
            5
        } else if i % 3 == 0 {
            1
        } else {
            0
        };
        lines.push(prompt_line(
            &format!("p{i:02}"),
            &format!("Summarise item {i}."),
            priority,
        ));
    }
    std::fs::write(env.path("prompts.jsonl"), lines.join("\n") + "\n").unwrap();
    let out = env
        .run(&[
            "run",
            "prompts.jsonl",
            "--model",
            "gpt-4o-mini",
            "--max-tokens",
            "20",
            "--concurrency",
            "1",
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let seen: Vec<String> = env
        .mock
        .log()
        .into_iter()
        .filter_map(|e| e.client_request_id)
        .collect();
    let mut expected: Vec<(i64, usize, String)> = (0..30)
        .map(|i| {
            let priority = if i % 10 == 7 {
                5
            } else if i % 3 == 0 {
                1
            } else {
                0
            };
            (-priority, i, format!("p{i:02}"))
        })
        .collect();
    expected.sort();
    let expected: Vec<String> = expected.into_iter().map(|e| e.2).collect();
    assert_eq!(seen, expected);
    let results = read_results(&env.path("prompts.results.jsonl"));
    assert_eq!(results.len(), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn estimate_matches_what_the_provider_counts_and_sends_nothing() {
    let env = Env::new(MockConfig::default()).await;
    let mut lines = Vec::new();
    let texts = [
        "Short.",
        "A longer English paragraph about invoices, receipts and the totals printed at the bottom of the page.",
        "Văn bản tiếng Việt: hóa đơn số 123, tổng cộng 1.250.000 đồng, ngày 29 tháng 11.",
        "日本語のテキストと English mixed together, with numbers 42 and 3.14.",
    ];
    let tool = serde_json::json!([{"type": "function", "function": {
        "name": "lookup_invoice", "description": "Find an invoice by its number.",
        "parameters": {"type": "object", "properties": {
            "number": {"type": "string", "description": "The invoice number."},
            "currency": {"type": "string", "description": "ISO code", "enum": ["EUR", "USD", "VND"]}}}}}]);
    // Every shape pacer claims to count as OpenAI does: user messages, system
    // prompts, named participants, tool definitions, cl100k and o200k models.
    for i in 0..200 {
        let text = format!("{i}: {}", texts[i % texts.len()]);
        let mut line: serde_json::Value =
            serde_json::from_str(&chat_line(&format!("r{i}"), 30)).unwrap();
        let body = &mut line["body"];
        body["messages"][0]["content"] = text.into();
        if i % 3 == 0 {
            let system = serde_json::json!({"role": "system", "content": "You fix OCR errors and keep the layout."});
            body["messages"].as_array_mut().unwrap().insert(0, system);
        }
        if i % 5 == 0 {
            body["messages"][0]["name"] = "clerk_7".into();
        }
        if i % 7 == 0 {
            body["tools"] = tool.clone();
        }
        if i % 2 == 0 {
            body["model"] = "gpt-3.5-turbo".into();
        }
        lines.push(line.to_string());
    }
    std::fs::write(env.path("jobs.jsonl"), lines.join("\n") + "\n").unwrap();
    let out = env
        .run(&["estimate", "jobs.jsonl", "--json", "--rpm", "600"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let est = summary(&out);
    assert_eq!(env.stats().requests, 0, "estimate sends nothing");
    assert_eq!(est["requests"], 200);
    assert_eq!(est["max_output_tokens"], 200 * 30);
    assert!(
        est["cost_min_usd"].as_f64().unwrap() > 0.0
            && est["cost_max_usd"].as_f64() > est["cost_min_usd"].as_f64()
    );
    assert!(
        (est["min_duration_s"].as_f64().unwrap() - 20.0).abs() < 1e-6,
        "{est}"
    );

    let out = env.run(&["run", "jobs.jsonl", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(env.stats().accepted, 200, "each request billed once");
    // The simulator bills with its own implementation of OpenAI's cookbook
    // (checked against Python tiktoken), not with pacer's code, so this
    // compares two independent counts. pacer claims the exact count for all
    // these shapes; 0.1% leaves room for nothing systematic: a missing
    // per-message overhead is ~7% here, a missing `name` token ~0.5%.
    let billed = env.stats().prompt_tokens as f64;
    let estimated = est["input_tokens"].as_f64().unwrap();
    assert!(billed > 0.0);
    assert!(
        (estimated - billed).abs() / billed <= 0.001,
        "estimated {estimated}, billed {billed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_of_documents_is_split_sent_resumed_and_exported_in_order() {
    let env = Env::new(MockConfig {
        latency: 2,
        ..MockConfig::default()
    })
    .await;
    let docs = env.path("docs");
    std::fs::create_dir_all(docs.join("scans")).unwrap();
    let paragraph = |i: usize| {
        format!("Paragraph {i} of the scanned report. The totals were checked twice and found to agree with the ledger.")
    };
    let long: Vec<String> = (0..40).map(paragraph).collect();
    std::fs::write(docs.join("scans/long.txt"), long.join("\n\n")).unwrap();
    std::fs::write(docs.join("short.txt"), "One short receipt.").unwrap();
    std::fs::write(
        env.path("prompt.txt"),
        "Clean up the OCR text of {name} ({path}):\n\n{text}",
    )
    .unwrap();
    let args = [
        "run",
        "docs",
        "--template",
        "prompt.txt",
        "--model",
        "gpt-4o-mini",
        "--split-tokens",
        "200",
        "--max-tokens",
        "40",
        "--json",
    ];
    let out = env.run(&args).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let results = read_results(&env.path("docs.results.jsonl"));
    let mut chunk_ids: Vec<&String> = results
        .keys()
        .filter(|k| k.starts_with("scans/long.txt#"))
        .collect();
    chunk_ids.sort();
    assert!(
        chunk_ids.len() >= 5,
        "the long document was split: {chunk_ids:?}"
    );
    assert!(results.contains_key("short.txt"));
    // A rerun finds everything done and sends nothing: the chunk ids are stable.
    let before = env.stats().requests;
    let out = env.run(&args).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(env.stats().requests, before);

    let out = env
        .run(&[
            "export",
            "docs.results.jsonl",
            "--by-document",
            "-o",
            "docs.txt.jsonl",
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let exported: Vec<Value> = std::fs::read_to_string(env.path("docs.txt.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let long = exported
        .iter()
        .find(|d| d["document"] == "scans/long.txt")
        .expect("long document exported");
    let n = long["chunks"].as_u64().unwrap() as usize;
    let joined: Vec<String> = (1..=n)
        .map(|k| {
            results[&format!("scans/long.txt#{k}")]["response"]["body"]["choices"][0]["message"]
                ["content"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(long["text"], joined.join("\n\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_messages_end_to_end() {
    let env = Env::new(MockConfig {
        rpm: Some(600),
        burst: Some(10),
        ..MockConfig::default()
    })
    .await;
    let mut lines = Vec::new();
    for i in 0..40 {
        lines.push(
            json!({"custom_id": format!("a{i}"), "method": "POST", "url": "/v1/messages", "body": {
                "model": "claude-3-5-haiku-latest", "max_tokens": 40, "system": "Be brief.",
                "messages": [{"role": "user", "content": format!("Question {i}?")}]}})
            .to_string(),
        );
    }
    std::fs::write(env.path("claude.jsonl"), lines.join("\n") + "\n").unwrap();
    let out = env
        .run_with(
            &["run", "claude.jsonl", "--json", "--concurrency", "8"],
            |c| {
                c.env_remove("OPENAI_API_KEY")
                    .env("ANTHROPIC_API_KEY", pacer_mock::DEFAULT_KEY);
            },
        )
        .await;
    // The key is looked up in OPENAI_API_KEY unless told otherwise.
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = env
        .run(&["run", "claude.jsonl", "--json", "--concurrency", "8"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_complete_and_matching(&env.path("claude.jsonl"), &env.path("claude.results.jsonl"));
    for r in read_results(&env.path("claude.results.jsonl")).values() {
        assert_eq!(r["response"]["body"]["type"], "message", "{r}");
    }
    let s = summary(&out);
    assert!(s["cost_usd"].as_f64().unwrap() > 0.0, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_appended_between_runs_join_the_job_and_priority_still_rules() {
    let env = Env::new(MockConfig::default()).await;
    // A first provider that runs out of quota after 5 requests.
    let quota = pacer_mock::MockServer::start(MockConfig {
        quota: Some(5),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let lines: Vec<String> = (0..20)
        .map(|i| prompt_line(&format!("p{i:02}"), &format!("Item {i}."), 0))
        .collect();
    std::fs::write(env.path("prompts.jsonl"), lines.join("\n") + "\n").unwrap();
    let args = [
        "run",
        "prompts.jsonl",
        "--model",
        "gpt-4o-mini",
        "--max-tokens",
        "10",
        "--concurrency",
        "1",
        "--json",
    ];
    let out = env
        .run_with(&args, |c| {
            c.env("OPENAI_BASE_URL", quota.base_url());
        })
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(summary(&out)["succeeded"], 5);

    // New work arrives: appended lines, one of them urgent.
    let mut text = std::fs::read_to_string(env.path("prompts.jsonl")).unwrap();
    text.push_str(&(prompt_line("p20", "Item 20.", 0) + "\n"));
    text.push_str(&(prompt_line("urgent", "Urgent item.", 9) + "\n"));
    // A duplicate of an id already run is refused, naming the line; nothing is sent.
    std::fs::write(
        env.path("prompts.jsonl"),
        format!("{text}{}\n", prompt_line("p03", "again", 0)),
    )
    .unwrap();
    let out = env.run(&args).await;
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("prompts.jsonl:23") && stderr(&out).contains("p03"),
        "{}",
        stderr(&out)
    );
    assert_eq!(env.chats(), 0);

    std::fs::write(env.path("prompts.jsonl"), &text).unwrap();
    let out = env.run(&args).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let seen: Vec<String> = env
        .mock
        .log()
        .into_iter()
        .filter_map(|e| e.client_request_id)
        .collect();
    assert_eq!(seen.first().map(String::as_str), Some("urgent"), "{seen:?}");
    assert_eq!(
        seen.len(),
        17,
        "the 15 left and the 2 new, nothing twice: {seen:?}"
    );
    let results = read_results(&env.path("prompts.results.jsonl"));
    assert_eq!(results.len(), 22);

    // Changing a line already run is still refused.
    std::fs::write(
        env.path("prompts.jsonl"),
        text.replacen("Item 0.", "Item zero.", 1),
    )
    .unwrap();
    let out = env.run(&args).await;
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(stderr(&out).contains("changed"), "{}", stderr(&out));
}
