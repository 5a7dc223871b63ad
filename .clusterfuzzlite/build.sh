#!/usr/bin/env bash
# ClusterFuzzLite / OSS-Fuzz build script: builds bgfuzz's cargo-fuzz targets,
# puts each binary in $OUT/<target> and its seed corpus (corpus/<target>/*) in
# $OUT/<target>_seed_corpus.zip.
#
# Inside the OSS-Fuzz image (base-builder-rust) the sanitizer and coverage
# flags come from the environment (SANITIZER, RUSTFLAGS and the image's cargo
# wrapper), so this script passes nothing but -O. Extra `cargo fuzz build`
# flags can be given in CARGO_FUZZ_FLAGS (split on whitespace); outside Docker,
# on stable Rust, use CARGO_FUZZ_FLAGS="-s none":
#
#   SRC=$(mktemp -d) OUT=$(mktemp -d) CARGO_FUZZ_FLAGS="-s none" .clusterfuzzlite/build.sh
#
# Where the repository is: the Dockerfile copies the checkout to $SRC/bgfuzz
# (and this script to $SRC/build.sh), so $SRC/bgfuzz is used when it holds the
# fuzz crate. Otherwise (outside Docker, SRC unset or pointing elsewhere) the
# repository is the parent of the directory this script lives in
# (.clusterfuzzlite/..), so no copy or symlink named bgfuzz is needed.
#
# Optional: FUZZ_TARGETS="scenario script" limits the targets (default: every
# target `cargo fuzz list` names); CARGO_TARGET_DIR is honoured.
set -euo pipefail

: "${OUT:?OUT must name the directory that receives the fuzz targets}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"

# A relative CARGO_TARGET_DIR is relative to where this script was started.
if [ -n "${CARGO_TARGET_DIR:-}" ]; then
  case "$CARGO_TARGET_DIR" in
    /*) ;;
    *) export CARGO_TARGET_DIR="$PWD/$CARGO_TARGET_DIR" ;;
  esac
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ -n "${SRC:-}" ] && [ -f "$SRC/bgfuzz/fuzz/Cargo.toml" ]; then
  repo="$SRC/bgfuzz"
elif [ -f "$here/../fuzz/Cargo.toml" ]; then
  repo="$(cd "$here/.." && pwd)"
else
  echo "build.sh: cannot find the bgfuzz checkout (neither \$SRC/bgfuzz nor $here/..)" >&2
  exit 1
fi
cd "$repo"
echo "build.sh: repository $repo, output $OUT"

# Extra flags, word-split on purpose (e.g. "-s none").
read -r -a extra_flags <<<"${CARGO_FUZZ_FLAGS:-}"

if [ -n "${FUZZ_TARGETS:-}" ]; then
  read -r -a targets <<<"$FUZZ_TARGETS"
else
  mapfile -t targets < <(cargo fuzz list)
fi
if [ "${#targets[@]}" -eq 0 ]; then
  echo "build.sh: no fuzz targets" >&2
  exit 1
fi

echo "build.sh: cargo fuzz build -O ${CARGO_FUZZ_FLAGS:-}"
cargo fuzz build -O ${extra_flags[@]+"${extra_flags[@]}"}

# cargo-fuzz builds for the host triple: fuzz/target/<triple>/release/<target>.
triple="$(rustc -vV | sed -n 's/^host: //p')"
triple="${triple:-x86_64-unknown-linux-gnu}"
target_dir="${CARGO_TARGET_DIR:-$repo/fuzz/target}"
bin_dir="$target_dir/$triple/release"

# Zips the regular, non-hidden files of $2 (flat, no directory names) into $1.
zip_seeds() {
  local zipfile="$1" dir="$2"
  rm -f "$zipfile"
  local files=()
  mapfile -t files < <(find "$dir" -maxdepth 1 -type f ! -name '.*' | LC_ALL=C sort)
  if [ "${#files[@]}" -eq 0 ]; then
    return 0
  fi
  if command -v zip >/dev/null 2>&1; then
    zip -j -q "$zipfile" "${files[@]}"
  else
    python3 - "$zipfile" "${files[@]}" <<'PY'
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_DEFLATED) as z:
    for path in sys.argv[2:]:
        z.write(path, arcname=os.path.basename(path))
PY
  fi
}

for t in "${targets[@]}"; do
  if [ ! -x "$bin_dir/$t" ]; then
    echo "build.sh: $bin_dir/$t was not built" >&2
    exit 1
  fi
  cp "$bin_dir/$t" "$OUT/$t"
  chmod 0755 "$OUT/$t"
  if [ -d "corpus/$t" ]; then
    zip_seeds "$OUT/${t}_seed_corpus.zip" "corpus/$t"
  fi
  if [ -f "$OUT/${t}_seed_corpus.zip" ]; then
    echo "build.sh: $OUT/$t, $OUT/${t}_seed_corpus.zip"
  else
    echo "build.sh: $OUT/$t (no seed corpus)"
  fi
done
