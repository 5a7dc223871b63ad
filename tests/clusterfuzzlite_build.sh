#!/usr/bin/env bash
# Runs .clusterfuzzlite/build.sh outside Docker, as ClusterFuzzLite would run
# it inside its image, and checks what it leaves in $OUT: one executable
# libFuzzer binary per target and a seed corpus zip with every file of
# corpus/<target>/, and that the binaries run over those seeds.
#
#   bash tests/clusterfuzzlite_build.sh     # about a minute (a release build)
#
# CARGO_FUZZ_FLAGS defaults to "-s none" (stable Rust, no sanitizer).
set -uo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo" || exit 1
targets=(scenario script)

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   $*"; }
fail() { failed=$((failed + 1)); echo "FAIL $*"; }
check() { # check DESCRIPTION COMMAND...
  local what="$1"
  shift
  if "$@"; then ok "$what"; else fail "$what"; fi
}

# Entries of a zip file, one name a line.
zip_names() {
  if command -v unzip >/dev/null 2>&1; then
    unzip -Z1 "$1"
  else
    python3 -c 'import sys, zipfile; print("\n".join(zipfile.ZipFile(sys.argv[1]).namelist()))' "$1"
  fi
}
unzip_to() { # unzip_to ZIP DIR
  mkdir -p "$2"
  if command -v unzip >/dev/null 2>&1; then
    unzip -q -o "$1" -d "$2"
  else
    python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$1" "$2"
  fi
}
# The seed files build.sh zips: regular, non-hidden files of corpus/<target>/.
seed_names() {
  find "corpus/$1" -maxdepth 1 -type f ! -name '.*' -printf '%f\n' | LC_ALL=C sort
}

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
export SRC="$tmp/src" OUT="$tmp/out"
mkdir -p "$SRC" "$OUT"
export CARGO_FUZZ_FLAGS="${CARGO_FUZZ_FLAGS:--s none}"

check "build.sh is executable" test -x .clusterfuzzlite/build.sh

# Without OUT it refuses at once, before building anything.
if env -u OUT .clusterfuzzlite/build.sh >"$tmp/no-out.log" 2>&1; then
  fail "build.sh without OUT exits non-zero"
else
  ok "build.sh without OUT exits non-zero"
fi

echo "-- SRC=$SRC OUT=$OUT CARGO_FUZZ_FLAGS='$CARGO_FUZZ_FLAGS' .clusterfuzzlite/build.sh"
if .clusterfuzzlite/build.sh >"$tmp/build.log" 2>&1; then
  ok "build.sh exits 0"
else
  fail "build.sh exits 0"
  tail -n 40 "$tmp/build.log"
fi

for t in "${targets[@]}"; do
  check "\$OUT/$t exists" test -f "$OUT/$t"
  check "\$OUT/$t is executable" test -x "$OUT/$t"
  zip="$OUT/${t}_seed_corpus.zip"
  if [ ! -f "$zip" ]; then
    fail "\$OUT/${t}_seed_corpus.zip exists"
    continue
  fi
  ok "\$OUT/${t}_seed_corpus.zip exists"

  want="$(seed_names "$t" | wc -l)"
  got="$(zip_names "$zip" | wc -l)"
  if [ "$want" -gt 0 ] && [ "$got" -eq "$want" ]; then
    ok "${t}_seed_corpus.zip has $got entries, as corpus/$t/ has files"
  else
    fail "${t}_seed_corpus.zip has $got entries, corpus/$t/ has $want files"
  fi
  if [ "$(zip_names "$zip" | LC_ALL=C sort)" = "$(seed_names "$t")" ]; then
    ok "${t}_seed_corpus.zip entries are corpus/$t/'s file names, flat"
  else
    fail "${t}_seed_corpus.zip entries are corpus/$t/'s file names, flat"
  fi

  seeds="$tmp/seeds-$t"
  unzip_to "$zip" "$seeds"
  if [ -x "$OUT/$t" ]; then
    # libFuzzer: run every seed, then 100 more inputs; a crash exits non-zero.
    if (cd "$tmp" && "$OUT/$t" -runs=100 "$seeds") >"$tmp/run-$t.log" 2>&1; then
      ok "\$OUT/$t -runs=100 <unzipped seeds> exits 0"
    else
      fail "\$OUT/$t -runs=100 <unzipped seeds> exits 0"
      tail -n 40 "$tmp/run-$t.log"
    fi
  else
    fail "\$OUT/$t -runs=100 <unzipped seeds> exits 0 (no binary)"
  fi
done

echo "clusterfuzzlite build.sh: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
