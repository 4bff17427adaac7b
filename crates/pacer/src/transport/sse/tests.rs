use super::*;
use serde_json::json;

const CHAT: &str = concat!(
    ": keep-alive\n\n",
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null},{\"index\":1,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}\n\n",
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[{\"index\":1,\"delta\":{\"content\":\"Chào \"},\"finish_reason\":null}],\"usage\":null}\n\n",
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},\"finish_reason\":null}],\"usage\":null}\n\n",
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\", world — ok\"},\"finish_reason\":null}],\"usage\":null}\n\n",
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[{\"index\":1,\"delta\":{\"content\":\"thế giới 🌏\"},\"finish_reason\":\"length\"}],\"usage\":null}\n\n",
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":9,\"total_tokens\":21}}\n\n",
    "data: [DONE]\n\n",
);

fn expected_chat() -> Value {
    json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Hello, world — ok"}, "logprobs": null, "finish_reason": "stop"},
            {"index": 1, "message": {"role": "assistant", "content": "Chào thế giới 🌏"}, "logprobs": null, "finish_reason": "length"},
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21},
    })
}

fn assemble(kind: StreamKind, pieces: &[&[u8]]) -> Result<Value, StreamError> {
    let mut a = StreamAssembler::new(kind);
    for piece in pieces {
        a.push(piece)?;
    }
    a.finish()
}

/// Small deterministic generator, so split points vary without a seed crate.
fn split_points(len: usize, seed: u64) -> Vec<usize> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut points = Vec::new();
    let mut at = 0;
    while at < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        at += 1 + (x % 23) as usize;
        points.push(at.min(len));
    }
    points
}

fn pieces(bytes: &[u8], points: &[usize]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut from = 0;
    for &p in points {
        out.push(bytes[from..p].to_vec());
        from = p;
    }
    out
}

#[test]
fn chat_stream_reassembles_choices_by_index_with_usage() {
    let body = assemble(StreamKind::OpenAiChat, &[CHAT.as_bytes()]).unwrap();
    assert_eq!(body, expected_chat());
    let usage = crate::cost::Usage::from_response(&body).unwrap();
    assert_eq!(usage.total(), 21);
}

#[test]
fn any_byte_split_gives_the_same_body() {
    let bytes = CHAT.as_bytes();
    // Every two-piece split, including inside the multi-byte characters.
    for cut in 0..=bytes.len() {
        let body = assemble(StreamKind::OpenAiChat, &[&bytes[..cut], &bytes[cut..]]).unwrap();
        assert_eq!(body, expected_chat(), "split at byte {cut}");
    }
    // One byte at a time, and many random splits.
    let singles: Vec<&[u8]> = bytes.chunks(1).collect();
    assert_eq!(
        assemble(StreamKind::OpenAiChat, &singles).unwrap(),
        expected_chat()
    );
    for seed in 0..50 {
        let owned = pieces(bytes, &split_points(bytes.len(), seed));
        let refs: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
        assert_eq!(
            assemble(StreamKind::OpenAiChat, &refs).unwrap(),
            expected_chat(),
            "seed {seed}"
        );
    }
}

#[test]
fn crlf_and_cr_line_endings_split_anywhere() {
    for ending in ["\r\n", "\r"] {
        let text = CHAT.replace('\n', ending);
        let bytes = text.as_bytes();
        for cut in 0..=bytes.len() {
            let body = assemble(StreamKind::OpenAiChat, &[&bytes[..cut], &bytes[cut..]]).unwrap();
            assert_eq!(body, expected_chat(), "ending {ending:?}, split at {cut}");
        }
    }
}

#[test]
fn a_stream_without_done_is_cut_wherever_it_stops() {
    let full = CHAT.as_bytes();
    let done_at = CHAT.find("data: [DONE]").unwrap();
    for end in [0, 10, done_at / 2, done_at, done_at + 8] {
        let err = assemble(StreamKind::OpenAiChat, &[&full[..end]]).unwrap_err();
        assert_eq!(err, StreamError::Cut, "stream cut at byte {end}");
    }
    // The final blank line is not needed once [DONE] itself is complete.
    let without_blank = &full[..full.len() - 1];
    assert_eq!(
        assemble(StreamKind::OpenAiChat, &[without_blank]).unwrap(),
        expected_chat()
    );
}

#[test]
fn an_error_event_is_a_provider_error() {
    let stream = concat!(
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n",
        "data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\n",
    );
    let err = assemble(StreamKind::OpenAiChat, &[stream.as_bytes()]).unwrap_err();
    assert_eq!(
        err,
        StreamError::Provider(json!({"error": {"message": "overloaded", "type": "server_error"}}))
    );

    let anthropic = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
    match assemble(StreamKind::Anthropic, &[anthropic.as_bytes()]) {
        Err(StreamError::Provider(v)) => assert_eq!(v["error"]["type"], "overloaded_error"),
        other => panic!("expected a provider error, got {other:?}"),
    }
}

#[test]
fn tool_call_arguments_are_concatenated() {
    let stream = concat!(
        "data: {\"id\":\"c\",\"created\":1,\"model\":\"gpt-4.1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c\",\"created\":1,\"model\":\"gpt-4.1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"city\\\":\"}}]},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c\",\"created\":1,\"model\":\"gpt-4.1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\"Hà Nội\\\"}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n",
        "data: [DONE]\n\n",
    );
    let body = assemble(StreamKind::OpenAiChat, &[stream.as_bytes()]).unwrap();
    let message = &body["choices"][0]["message"];
    assert_eq!(message["content"], Value::Null);
    assert_eq!(message["tool_calls"][0]["id"], "call_1");
    assert_eq!(message["tool_calls"][0]["function"]["name"], "get_weather");
    assert_eq!(
        message["tool_calls"][0]["function"]["arguments"],
        "{\"city\":\"Hà Nội\"}"
    );
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(body["usage"], Value::Null, "no usage chunk was sent");
}

#[test]
fn completions_stream_reassembles_text() {
    let stream = concat!(
        "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":5,\"model\":\"gpt-3.5-turbo-instruct\",\"choices\":[{\"text\":\"Once\",\"index\":0,\"logprobs\":null,\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":5,\"model\":\"gpt-3.5-turbo-instruct\",\"choices\":[{\"text\":\" upon\",\"index\":0,\"logprobs\":null,\"finish_reason\":\"length\"}]}\n\n",
        "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":5,\"model\":\"gpt-3.5-turbo-instruct\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\n\n",
        "data: [DONE]\n\n",
    );
    let body = assemble(StreamKind::OpenAiCompletions, &[stream.as_bytes()]).unwrap();
    assert_eq!(
        body,
        json!({
            "id": "cmpl-1", "object": "text_completion", "created": 5, "model": "gpt-3.5-turbo-instruct",
            "choices": [{"text": "Once upon", "index": 0, "logprobs": null, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        })
    );
}

const ANTHROPIC: &str = concat!(
    "event: message_start\n",
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-5-20250929\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":25,\"cache_read_input_tokens\":100,\"output_tokens\":1}}}\n\n",
    "event: content_block_start\n",
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    "event: ping\n",
    "data: {\"type\": \"ping\"}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Xin \"}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"chào\"}}\n\n",
    "event: content_block_stop\n",
    "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    "event: content_block_start\n",
    "data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"ocr\",\"input\":{}}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"page\\\": \"}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"3}\"}}\n\n",
    "event: content_block_stop\n",
    "data: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
    "event: message_delta\n",
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\n\n",
    "event: message_stop\n",
    "data: {\"type\":\"message_stop\"}\n\n",
);

fn expected_anthropic() -> Value {
    json!({
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": [
            {"type": "text", "text": "Xin chào"},
            {"type": "tool_use", "id": "toolu_1", "name": "ocr", "input": {"page": 3}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": null,
        "usage": {"input_tokens": 25, "cache_read_input_tokens": 100, "output_tokens": 15},
    })
}

#[test]
fn anthropic_stream_reassembles_a_message() {
    let body = assemble(StreamKind::Anthropic, &[ANTHROPIC.as_bytes()]).unwrap();
    assert_eq!(body, expected_anthropic());
    let usage = crate::cost::Usage::from_response(&body).unwrap();
    assert_eq!(
        (
            usage.prompt_tokens,
            usage.cached_tokens,
            usage.completion_tokens
        ),
        (125, 100, 15)
    );
}

#[test]
fn anthropic_any_split_same_body_and_cut_without_message_stop() {
    let bytes = ANTHROPIC.as_bytes();
    for seed in 0..50 {
        let owned = pieces(bytes, &split_points(bytes.len(), seed));
        let refs: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
        assert_eq!(
            assemble(StreamKind::Anthropic, &refs).unwrap(),
            expected_anthropic(),
            "seed {seed}"
        );
    }
    let stop_at = ANTHROPIC.find("event: message_stop").unwrap();
    assert_eq!(
        assemble(StreamKind::Anthropic, &[&bytes[..stop_at]]),
        Err(StreamError::Cut)
    );
    // `[DONE]` means nothing to Anthropic's stream.
    let fake = format!("{}data: [DONE]\n\n", &ANTHROPIC[..stop_at]);
    assert!(matches!(
        assemble(StreamKind::Anthropic, &[fake.as_bytes()]),
        Err(StreamError::Malformed(_))
    ));
}

#[test]
fn multi_line_data_and_bom_are_read_as_the_spec_says() {
    let stream = "\u{feff}data: {\"id\":\"c\",\ndata: \"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"},\"finish_reason\":\"stop\"}]}\n\ndata:[DONE]\n\n";
    let body = assemble(StreamKind::OpenAiChat, &[stream.as_bytes()]).unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "a");
    assert_eq!(body["id"], "c");
}

#[test]
fn bad_json_is_malformed_and_kind_follows_the_path() {
    let err = assemble(StreamKind::OpenAiChat, &[b"data: {not json\n\n"]).unwrap_err();
    assert!(matches!(err, StreamError::Malformed(_)));
    let kind = |path| StreamKind::of(Endpoint::from_path(path));
    assert_eq!(kind("/v1/chat/completions"), Some(StreamKind::OpenAiChat));
    assert_eq!(
        kind("/v1/completions/"),
        Some(StreamKind::OpenAiCompletions)
    );
    assert_eq!(kind("/v1/messages?beta=true"), Some(StreamKind::Anthropic));
    assert_eq!(kind("/v1/embeddings"), None);
}

#[test]
fn is_done_turns_true_on_the_final_event() {
    let mut a = StreamAssembler::new(StreamKind::OpenAiChat);
    let done_at = CHAT.find("data: [DONE]").unwrap();
    a.push(&CHAT.as_bytes()[..done_at]).unwrap();
    assert!(!a.is_done());
    a.push(&CHAT.as_bytes()[done_at..]).unwrap();
    assert!(a.is_done());
}

/// Lines a broken or hostile stream might hold, so that the fuzzing gets
/// past the framing into the reassembly.
fn sse_piece() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    let json = prop_oneof![
        any::<u64>().prop_map(|i| format!("{{\"choices\":[{{\"index\":{i},\"delta\":{{\"content\":\"x\",\"tool_calls\":[{{\"index\":{i},\"function\":{{\"arguments\":\"a\"}}}}]}}}}],\"usage\":{{\"prompt_tokens\":{i}}}}}")),
        any::<u64>().prop_map(|i| format!("{{\"type\":\"content_block_start\",\"index\":{i},\"content_block\":{{\"type\":\"text\",\"text\":\"\"}}}}")),
        any::<u64>().prop_map(|i| format!("{{\"type\":\"content_block_delta\",\"index\":{i},\"delta\":{{\"type\":\"input_json_delta\",\"partial_json\":\"{{\"}}}}")),
        any::<i128>().prop_map(|n| format!("{{\"type\":\"message_delta\",\"usage\":{{\"output_tokens\":{n}}}}}")),
        Just("{\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":1e300}}}".to_string()),
        Just("{\"type\":\"message_stop\"}".to_string()),
        Just("{\"type\":\"error\",\"error\":{}}".to_string()),
        any::<String>(),
    ];
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        json.prop_map(|j| format!("data: {j}\n\n").into_bytes()),
        Just(b"data: [DONE]\n\n".to_vec()),
        Just(b"event: message_stop\r\n".to_vec()),
        Just(b"\xEF\xBB\xBF".to_vec()),
        Just(b"\r".to_vec()),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
    #[test]
    fn arbitrary_bytes_never_panic(
        pieces in proptest::collection::vec(sse_piece(), 0..16),
        kind in 0..3usize,
    ) {
        let kind = [StreamKind::OpenAiChat, StreamKind::OpenAiCompletions, StreamKind::Anthropic][kind];
        let mut a = StreamAssembler::new(kind);
        for p in &pieces {
            if a.push(p).is_err() {
                return Ok(());
            }
        }
        if let Ok(body) = a.finish() {
            if let Some(u) = crate::cost::Usage::from_response(&body) {
                proptest::prop_assert!(u.completion_tokens <= crate::provider::MAX_COUNT);
                proptest::prop_assert!(u.prompt_tokens <= 3 * crate::provider::MAX_COUNT);
            }
        }
    }
}
