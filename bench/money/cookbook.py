#!/usr/bin/env python3
"""Independent anchors for the token count: OpenAI's own reported usage.

  cookbook.py OUT_DIR   -> writes one Batch JSONL per (case, model) and a
                           cases.json with the prompt_tokens the OpenAI API
                           reported for it

The simulator counts prompts with pacer's own code, so "estimate vs. the
simulator" only checks that the two agree. These cases come from OpenAI's
cookbook notebook "How to count tokens with tiktoken"
(openai/openai-cookbook, examples/How_to_count_tokens_with_tiktoken.ipynb,
sections 6 and 7), where the printed `response.usage.prompt_tokens` of real
API calls is recorded: 129 (gpt-3.5-turbo, gpt-4) and 124 (gpt-4o,
gpt-4o-mini) for the messages example; 105 and 101 for the tools example.
"""
import json
import os
import sys

MESSAGES = [
    {"role": "system", "content": "You are a helpful, pattern-following assistant that translates corporate jargon into plain English."},
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
    {"role": "system", "name": "example_user", "content": "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage."},
    {"role": "system", "name": "example_assistant", "content": "Let's talk later when we're less busy about how to do better."},
    {"role": "user", "content": "This late pivot means we don't have time to boil the ocean for the client deliverable."},
]
TOOLS = [{"type": "function", "function": {
    "name": "get_current_weather",
    "description": "Get the current weather in a given location",
    "parameters": {"type": "object", "properties": {
        "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
        "unit": {"type": "string", "description": "The unit of temperature to return", "enum": ["celsius", "fahrenheit"]}},
        "required": ["location"]}}}]
TOOL_MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant that can answer to questions about the weather."},
    {"role": "user", "content": "What's the weather like in San Francisco?"},
]
CASES = [
    ("messages", "gpt-3.5-turbo", {"messages": MESSAGES, "max_tokens": 1}, 129),
    ("messages", "gpt-4", {"messages": MESSAGES, "max_tokens": 1}, 129),
    ("messages", "gpt-4o", {"messages": MESSAGES, "max_tokens": 1}, 124),
    ("messages", "gpt-4o-mini", {"messages": MESSAGES, "max_tokens": 1}, 124),
    ("tools", "gpt-3.5-turbo", {"messages": TOOL_MESSAGES, "tools": TOOLS}, 105),
    ("tools", "gpt-4", {"messages": TOOL_MESSAGES, "tools": TOOLS}, 105),
    ("tools", "gpt-4o", {"messages": TOOL_MESSAGES, "tools": TOOLS}, 101),
    ("tools", "gpt-4o-mini", {"messages": TOOL_MESSAGES, "tools": TOOLS}, 101),
]

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
cases = []
for case, model, body, api in CASES:
    path = os.path.join(out, f"{case}-{model}.jsonl")
    line = {"custom_id": f"{case}-{model}", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, **body}}
    with open(path, "w") as f:
        f.write(json.dumps(line) + "\n")
    cases.append({"case": case, "model": model, "file": path, "openai_api_prompt_tokens": api})
json.dump(cases, open(os.path.join(out, "cases.json"), "w"), indent=1)
