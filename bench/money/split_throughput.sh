#!/usr/bin/env bash
# Issue 5, figure 6: splitting throughput. Times
#   pacer estimate DIR --template T --model gpt-4o-mini --split-tokens 500 --json
# on generated folders (English; mixed English/Vietnamese/Japanese/code):
# every document is read, split on paragraph, sentence and word boundaries
# with the model's tokenizer, each chunk counted, nothing sent. Reports MB/s
# (megabytes = 10^6 bytes of UTF-8 text), the median of REPS runs, after
# subtracting a one-document run's time (process start, tokenizer loading).
# The same folder without --split-tokens (count only) is timed for reference.
#   bench/money/split_throughput.sh [MB=20] [REPS=3]
source "$(dirname "$0")/../adaptive/lib.sh"
HERE="$(cd "$(dirname "$0")" && pwd)"
mb=${1:-20} reps=${2:-3}
RES="$HERE/results"; mkdir -p "$RES"
tpl="$WORK/split-template.txt"
printf 'Clean up this OCR text (%s): fix broken words, keep the layout.\n\n{text}\n' '{name}' >"$tpl"
for lang in en mixed; do
  d="$WORK/docs-$lang-$mb"
  if [[ ! -f "$d.done" ]]; then rm -rf "$d"; python3 "$HERE/gen_docs.py" "$d" "$mb" --lang "$lang" >&2; touch "$d.done"; fi
done
tiny="$WORK/docs-tiny"; rm -rf "$tiny"; mkdir -p "$tiny"; echo "One short document." >"$tiny/a.txt"

python3 - "$PACER" "$tpl" "$WORK" "$mb" "$reps" "$tiny" "$RES/split-throughput.json" "$(machine_json)" <<'PY'
import json, os, statistics as st, subprocess, sys, time
pacer, tpl, work, mb, reps, tiny, out, machine = sys.argv[1:]
reps = int(reps)
def timed(args):
    t = time.perf_counter()
    p = subprocess.run(args, capture_output=True, text=True, timeout=900)
    dt = time.perf_counter() - t
    if p.returncode != 0:
        sys.exit(f"failed: {args}: {p.stderr[-500:]}")
    return dt, json.loads(p.stdout)
def cmd(d, split):
    c = [pacer, "estimate", d, "--template", tpl, "--model", "gpt-4o-mini", "--json"]
    return c + (["--split-tokens", "500"] if split else [])
rec = {"figure": "issue 5 / splitting throughput", "machine": json.loads(machine), "cases": []}
base = st.median(timed(cmd(tiny, True))[0] for _ in range(reps))
rec["startup_s"] = base
for lang in ("en", "mixed"):
    d = os.path.join(work, f"docs-{lang}-{mb}")
    nbytes = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(d) for f in fs)
    ndocs = sum(len(fs) for _, _, fs in os.walk(d))
    for split in (True, False):
        runs = [timed(cmd(d, split)) for _ in range(reps)]
        secs = [r[0] for r in runs]
        e = runs[0][1]
        med = st.median(secs)
        case = {"lang": lang, "split_tokens": 500 if split else None, "command": " ".join(cmd(d, split)),
                "documents": ndocs, "bytes": nbytes, "requests": e["requests"], "input_tokens": e["input_tokens"],
                "seconds": [round(s, 3) for s in secs], "median_s": round(med, 3),
                "mb_per_s": round(nbytes / 1e6 / max(1e-9, med - base), 2),
                "mb_per_s_including_startup": round(nbytes / 1e6 / med, 2)}
        rec["cases"].append(case)
        print(json.dumps({k: case[k] for k in ("lang", "split_tokens", "documents", "bytes", "requests",
                                              "input_tokens", "median_s", "mb_per_s", "mb_per_s_including_startup")}))
json.dump(rec, open(out, "w"), indent=1)
print(json.dumps({"startup_s": base}))
PY
