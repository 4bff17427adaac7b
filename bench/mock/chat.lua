-- One small chat request, the shape a batch job sends, with the mock's default key.
wrk.method = "POST"
wrk.body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Summarise this document in one sentence."}],"max_tokens":64}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-mock-key"
