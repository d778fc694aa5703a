#!/usr/bin/env bash
# Installs what tests/it/clients.rs drives Freeway with, under target/clients (./test.sh runs it):
#   target/clients/venv  the anthropic, google-genai, ollama and openai Python clients, pinned in requirements.txt
#   target/clients/npm   Claude Code, Codex CLI and the Gemini CLI from the npm registry, pinned below
# plus unshare (util-linux) and ip (iproute2) for the loopback-only network namespace.
# Idempotent: a pinned version that is already installed is not fetched again. Prints what
# could not be installed and exits 1 then (the client tests fail and say why).
set -uo pipefail
cd "$(dirname "$0")/../.."
CLAUDE_CODE=2.1.197
CODEX=0.169.0
GEMINI_CLI=0.61.0
dir=target/clients
status=0
mkdir -p "$dir"

missing=()
command -v unshare >/dev/null 2>&1 || missing+=(util-linux)
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || missing+=(iproute2)
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -q && $sudo apt-get install -y -q "${missing[@]}" \
    || { echo "tests/clients: could not install ${missing[*]} (apt-get)" >&2; status=1; }
fi

# The SDKs: a venv per requirements.txt, remade when the pins change.
stamp="$dir/venv/.requirements.txt"
if ! cmp -s tests/clients/requirements.txt "$stamp" || [ ! -x "$dir/venv/bin/python" ]; then
  rm -rf "$dir/venv"
  if python3 -m venv "$dir/venv" \
    && "$dir/venv/bin/pip" install -q --disable-pip-version-check -r tests/clients/requirements.txt \
    && "$dir/venv/bin/python" -c "import anthropic, google.genai, ollama, openai"; then
    cp tests/clients/requirements.txt "$stamp"
  else
    echo "tests/clients: could not install the Python SDKs of tests/clients/requirements.txt into $dir/venv" >&2
    status=1
  fi
fi

# The coding agents, exact versions (--save-exact keeps a later `npm install` from moving them).
want="@anthropic-ai/claude-code@$CLAUDE_CODE @openai/codex@$CODEX @google/gemini-cli@$GEMINI_CLI"
stamp="$dir/npm/.installed"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || [ ! -x "$dir/npm/node_modules/.bin/claude" ]; then
  # shellcheck disable=SC2086 # $want is three package specs
  if npm install --prefix "$dir/npm" --save-exact --no-audit --no-fund --loglevel=error $want \
    && "$dir/npm/node_modules/.bin/claude" --version >/dev/null \
    && "$dir/npm/node_modules/.bin/codex" --version >/dev/null \
    && "$dir/npm/node_modules/.bin/gemini" --version >/dev/null; then
    echo "$want" >"$stamp"
  else
    echo "tests/clients: could not install $want with npm into $dir/npm" >&2
    status=1
  fi
fi
exit $status
