#!/usr/bin/env bash
# Start `ryzanstein serve` on 127.0.0.1 (a free port), wait until /readyz answers, ask one chat
# question through the OpenAI-compatible API, print the answer, and stop the server.
# Expects the release binary to be built already (`make demo` does that).
set -euo pipefail

TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ryzanstein/target}"
BIN="${RYZANSTEIN_BIN:-$TARGET_DIR/release/ryzanstein}"
MODEL="${MODEL:-bundled://smollm2-135m-instruct}"
SERVED_NAME="${SERVED_NAME:-smollm2-135m-instruct}"
QUESTION="${QUESTION:-What is the capital of France?}"
READY_TIMEOUT_S="${READY_TIMEOUT_S:-300}"

[[ -x "$BIN" ]] || { echo "demo: $BIN not found; run 'make demo' (it builds the release binary)" >&2; exit 1; }
for tool in curl python3; do
    command -v "$tool" >/dev/null || { echo "demo: '$tool' is required; install it and rerun" >&2; exit 1; }
done

PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
BASE="http://127.0.0.1:$PORT"
LOG="$(mktemp -t ryzanstein-demo.XXXXXX.log)"

echo "demo: starting $BIN serve --model $MODEL on $BASE (log: $LOG)"
"$BIN" serve --model "$MODEL" --host 127.0.0.1 --port "$PORT" --served-name "$SERVED_NAME" >"$LOG" 2>&1 &
SERVER_PID=$!
stop_server() {
    local rc=$?
    if kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ $rc -eq 0 ]]; then
        rm -f "$LOG"
    else
        echo "demo: server log kept in $LOG" >&2
    fi
}
trap stop_server EXIT
trap 'exit 130' INT TERM

deadline=$((SECONDS + READY_TIMEOUT_S))
until curl -fsS "$BASE/readyz" >/dev/null 2>&1; do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "demo: the server exited before it became ready; its log follows" >&2
        cat "$LOG" >&2
        exit 1
    fi
    if ((SECONDS >= deadline)); then
        echo "demo: the server was not ready after ${READY_TIMEOUT_S}s; its log follows" >&2
        cat "$LOG" >&2
        exit 1
    fi
    sleep 0.5
done
echo "demo: server ready"

# A system message of our own: without one, the model's template adds its default ("You are a
# helpful AI assistant named SmolLM..."), after which this 135M model answers greedily in French
# verse (llama.cpp gives the same tokens; see the shared reference).
SYSTEM="You are a concise assistant. Answer in one line."
BODY="$(python3 -c 'import json, sys; print(json.dumps({"model": sys.argv[1], "messages": [{"role": "system", "content": sys.argv[3]}, {"role": "user", "content": sys.argv[2]}], "max_tokens": 64, "temperature": 0}))' "$SERVED_NAME" "$QUESTION" "$SYSTEM")"
echo "demo: POST $BASE/v1/chat/completions  system: $SYSTEM  user: $QUESTION"
RESP="$(curl -sS -H 'Content-Type: application/json' -d "$BODY" -w '\n%{http_code}' "$BASE/v1/chat/completions")"
CODE="${RESP##*$'\n'}"
RESP="${RESP%$'\n'*}"
if [[ "$CODE" != "200" ]]; then
    echo "demo: the server answered HTTP $CODE: $RESP" >&2
    exit 1
fi
printf '%s' "$RESP" | python3 -c '
import json, sys
r = json.load(sys.stdin)
c = r["choices"][0]
print("assistant:", c["message"]["content"])
u = r.get("usage") or {}
print("(finish_reason=%s, prompt_tokens=%s, completion_tokens=%s)" % (c.get("finish_reason"), u.get("prompt_tokens"), u.get("completion_tokens")))
'
