#!/usr/bin/env bash
# Validates every .github/workflows/*.yml (and *.yaml) against GitHub's
# workflow JSON schema, as vendored by check-jsonschema
# (--builtin-schema vendor.github-workflows: no network beyond PyPI, and none
# at all once check-jsonschema is installed).
#
#   bash ci/validate-workflows.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# check-jsonschema: on PATH, else as a module, else installed with pip, else
# (a pip that refuses system-wide installs, PEP 668) in a private venv.
find_checker() {
  if command -v check-jsonschema >/dev/null 2>&1; then
    checker=(check-jsonschema)
  elif python3 -m check_jsonschema --version >/dev/null 2>&1; then
    checker=(python3 -m check_jsonschema)
  else
    return 1
  fi
}
if ! find_checker; then
  echo "validate-workflows: installing check-jsonschema"
  if ! python3 -m pip install --quiet check-jsonschema || ! find_checker; then
    venv="${XDG_CACHE_HOME:-$HOME/.cache}/bgfuzz-check-jsonschema"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet check-jsonschema
    checker=("$venv/bin/check-jsonschema")
  fi
fi
echo "validate-workflows: $("${checker[@]}" --version)"

shopt -s nullglob
files=(.github/workflows/*.yml .github/workflows/*.yaml)
if [ "${#files[@]}" -eq 0 ]; then
  echo "validate-workflows: no files in .github/workflows/" >&2
  exit 1
fi

passed=0
failed=0
for f in "${files[@]}"; do
  if out="$("${checker[@]}" --builtin-schema vendor.github-workflows "$f" 2>&1)"; then
    passed=$((passed + 1))
    echo "ok   $f"
  else
    failed=$((failed + 1))
    echo "FAIL $f"
    printf '%s\n' "$out" | sed 's/^/     /'
  fi
done
echo "validate-workflows: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
