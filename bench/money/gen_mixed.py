#!/usr/bin/env python3
"""Write a mixed OpenAI Batch JSONL input for the estimate-error benchmark.

  gen_mixed.py N OUT [--seed 5]

About 85% chat completions (system + user, some multi-turn, some `name`
fields, some content given as an array of text parts), about 15% embeddings
(`/v1/embeddings`, a string or a list of strings). Text in English,
Vietnamese, Japanese and source code, of varied lengths (a sentence to a few
thousand tokens). Models: gpt-4o-mini, gpt-4o, gpt-4.1-mini, gpt-4.1-nano
(o200k) and gpt-3.5-turbo, text-embedding-3-small (cl100k). `max_tokens`
varies (16-2000), sometimes `max_completion_tokens`, sometimes absent (the
1,024 default), sometimes n=2. Deterministic for a given seed.
"""
import argparse
import json
import random

EN = [
    "The invoice lists three items, each with a quantity, a unit price and a total.",
    "Please extract the customer's name, the billing address and the amount due.",
    "The scanned page is rotated and some words are broken across lines.",
    "Payment is due within thirty days of the date shown at the top of the document.",
    "A late fee of two percent per month applies to any unpaid balance.",
    "The contract was signed by both parties on the fourteenth of March.",
    "Summarise the following report in no more than five bullet points.",
    "OCR errors often replace the letter l with the digit 1, and O with 0.",
    "Keep the original layout: headings, lists and tables must stay where they are.",
    "If a field is missing, answer with null rather than guessing a value.",
]
VI = [
    "Tuần trước, toàn bộ hệ thống xử lý mười nghìn tài liệu OCR ngừng hoạt động lúc ba giờ sáng.",
    "Hóa đơn này gồm ba mặt hàng, mỗi mặt hàng có số lượng, đơn giá và thành tiền.",
    "Vui lòng trích xuất tên khách hàng, địa chỉ thanh toán và số tiền phải trả.",
    "Hợp đồng được ký bởi hai bên vào ngày mười bốn tháng ba năm hai nghìn hai mươi tư.",
    "Giới hạn tốc độ là năm mươi yêu cầu mỗi phút; vượt quá sẽ nhận lỗi 429.",
    "Hãy tóm tắt báo cáo sau đây trong không quá năm gạch đầu dòng.",
    "Văn bản quét bị nghiêng và một số từ bị ngắt giữa hai dòng.",
    "Nếu thiếu một trường thông tin, hãy trả lời null thay vì đoán.",
    "Chi phí dự kiến cho cả lô xử lý phải được biết trước khi bắt đầu.",
    "Người dùng muốn các tài liệu khẩn cấp được xử lý trước tiên.",
]
JA = [
    "請求書には三つの品目があり、それぞれに数量、単価、合計が記載されています。",
    "顧客名、請求先住所、支払金額を抽出してください。",
    "スキャンされたページは傾いており、いくつかの単語が行をまたいで分割されています。",
    "支払期限は文書上部に記載された日付から三十日以内です。",
    "未払い残高には月二パーセントの延滞料が適用されます。",
    "契約は三月十四日に両当事者によって署名されました。",
    "次の報告書を五つ以内の箇条書きで要約してください。",
    "フィールドが欠けている場合は、推測せずに null と答えてください。",
    "お誕生日おめでとうございます。今日は良い天気ですね。",
    "レート制限を超えると、サーバーは HTTP 429 を返します。",
]
CODE = [
    "def backoff(attempt, base=1.0, cap=60.0):\n    return min(cap, base * 2 ** attempt) * random.random()\n",
    "async fn send(&self, req: Request) -> Result<Response, Error> {\n    let permit = self.limiter.acquire().await?;\n    self.client.execute(req).await\n}\n",
    "for line in open('requests.jsonl'):\n    item = json.loads(line)\n    queue.put((-item.get('priority', 0), item['id'], item))\n",
    "SELECT custom_id, status FROM results WHERE status <> 200 ORDER BY custom_id;\n",
    "const retryAfter = Number(res.headers.get('retry-after-ms') ?? 1000);\nawait new Promise(r => setTimeout(r, retryAfter));\n",
    "impl Drop for Guard {\n    fn drop(&mut self) { self.inflight.fetch_sub(1, Ordering::SeqCst); }\n}\n",
    "curl -s https://api.openai.com/v1/models -H \"Authorization: Bearer $OPENAI_API_KEY\" | jq '.data[].id'\n",
    "#include <stdio.h>\nint main(void) { printf(\"%d\\n\", 42); return 0; }\n",
]
SYSTEMS = [
    "Clean up this OCR text: fix broken words, keep the layout, answer with the text only.",
    "Bạn là trợ lý trích xuất dữ liệu từ hóa đơn. Trả lời bằng JSON.",
    "あなたは優秀な翻訳者です。日本語を英語に翻訳してください。",
    "You are a careful code reviewer. Point out bugs, then suggest a fix.",
    "Translate the user's text into English, keeping numbers and names unchanged.",
]
CHAT_MODELS = ["gpt-4o-mini"] * 6 + ["gpt-4o", "gpt-4.1-mini", "gpt-4.1-nano", "gpt-3.5-turbo"]


def text(rng, lang=None, sentences=None):
    lang = lang or rng.choice(["en", "vi", "ja", "code", "mixed"])
    n = sentences or rng.choice([1, 2, 3, 5, 8, 13, 21, 40, 80, 150])
    pools = {"en": EN, "vi": VI, "ja": JA, "code": CODE}
    parts = []
    for _ in range(n):
        pool = pools[lang] if lang != "mixed" else pools[rng.choice(list(pools))]
        parts.append(rng.choice(pool))
    sep = "\n" if lang == "code" else rng.choice([" ", "\n", "\n\n"])
    return sep.join(parts), lang


def chat(rng, i):
    model = rng.choice(CHAT_MODELS)
    body_text, lang = text(rng)
    msgs = [{"role": "system", "content": rng.choice(SYSTEMS)}]
    shape = rng.random()
    if shape < 0.15:  # a few-shot conversation, with `name` fields as in OpenAI's cookbook
        msgs.append({"role": "system", "name": "example_user", "content": text(rng, sentences=1)[0]})
        msgs.append({"role": "system", "name": "example_assistant", "content": text(rng, sentences=1)[0]})
        msgs.append({"role": "user", "content": body_text})
    elif shape < 0.30:  # multi-turn
        msgs.append({"role": "user", "content": text(rng, sentences=2)[0]})
        msgs.append({"role": "assistant", "content": text(rng, sentences=2)[0]})
        msgs.append({"role": "user", "content": body_text})
    elif shape < 0.40:  # content as text parts
        msgs.append({"role": "user", "content": [{"type": "text", "text": f"Document {i}:"},
                                                 {"type": "text", "text": body_text}]})
    else:
        msgs.append({"role": "user", "content": f"Document {i} ({lang}):\n{body_text}"})
    body = {"model": model, "messages": msgs}
    r = rng.random()
    if r < 0.10:
        pass  # no max_tokens: the provider's default applies
    elif r < 0.20:
        body["max_completion_tokens"] = rng.choice([64, 256, 1000])
    else:
        body["max_tokens"] = rng.choice([16, 32, 64, 100, 200, 500, 1000, 2000])
    if rng.random() < 0.05:
        body["n"] = 2
    if rng.random() < 0.3:
        body["temperature"] = rng.choice([0, 0.2, 0.7, 1])
    return {"custom_id": f"chat-{i:05d}", "method": "POST", "url": "/v1/chat/completions", "body": body}


def embedding(rng, i):
    if rng.random() < 0.5:
        inp = text(rng, sentences=rng.choice([1, 3, 10, 30]))[0]
    else:
        inp = [text(rng, sentences=rng.choice([1, 2, 5]))[0] for _ in range(rng.randint(2, 8))]
    return {"custom_id": f"emb-{i:05d}", "method": "POST", "url": "/v1/embeddings",
            "body": {"model": "text-embedding-3-small", "input": inp}}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("n", type=int)
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=5)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    with open(a.out, "w", encoding="utf-8") as f:
        for i in range(a.n):
            line = embedding(rng, i) if rng.random() < 0.15 else chat(rng, i)
            f.write(json.dumps(line, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
