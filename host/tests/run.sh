#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need (the
# guest toolchains through plugins/build.sh, nats-server, the C toolchain, awscli and boto3),
# builds the plugins and test fixtures, checks formatting and lints, then runs
# every test. .ci/run calls exactly this.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"

"$root/host/tests/tools.sh"
"$root/plugins/build.sh" rust js python c
export PATH="$root/.tools/venv/bin:$PATH"

# Style gates first: a formatting or lint failure is reported before the long run.
rustup component add rustfmt clippy >/dev/null 2>&1 || true
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy -p busbar --all-targets --features otlp -- -D warnings

echo "== cargo test"
cargo test --workspace "$@"
# The OTLP export lives behind a cargo feature; its test (a module of the one
# integration-test binary, compiled only with the feature) needs that build.
echo "== cargo test --features otlp"
cargo test -p busbar --features otlp --test all otlp:: "$@"
