-- wrk script: POST one small chat completion to the mock (loopback).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-mock-key"
wrk.body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Doc 0: signature receipt date agreement"}],"max_tokens":16}'
